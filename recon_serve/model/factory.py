"""One front door: build a model from a config name, a config dict, or a checkpoint path."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from recon_serve.model.checkpoint import PRETRAIN_ONLY, read_checkpoint
from recon_serve.model.recon import ReCon, ReConConfig

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "default" / "recon_default.pt"


def list_configs() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("recon_serve.model.configs").iterdir() if p.name.endswith(".json"))


def load_config(name: str, **overrides) -> ReConConfig:
    path = resources.files("recon_serve.model.configs") / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown config {name!r}; available: {', '.join(list_configs())}")
    return ReConConfig(**{**json.loads(path.read_text()), **overrides})


def create_model(name_or_path: str | Path | None = None, **overrides):
    """A config name ('tiny') gives a fresh model; a checkpoint path gives the trained one (eval mode).

    Returns (model, checkpoint dict or None).
    """
    if name_or_path is None:
        name_or_path = DEFAULT_CHECKPOINT
    if isinstance(name_or_path, (str, Path)) and str(name_or_path) in list_configs():
        return ReCon(load_config(str(name_or_path), **overrides)), None
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: neither a config name ({', '.join(list_configs())}) nor a checkpoint file")
    ckpt = read_checkpoint(path)
    return model_from_checkpoint(ckpt, **overrides), ckpt


def model_from_checkpoint(ckpt: dict, **overrides) -> ReCon:
    """The checkpoint's model in eval mode. Every weight it uses must be in the file (only the
    pretraining decoder and the contrastive temperature may be absent), so two loads of one file
    always give the same outputs."""
    defaults = ReConConfig().to_dict()
    known = {k: v for k, v in ckpt["config"].items() if k in defaults}
    model = ReCon(ReConConfig(**{**defaults, **known, **overrides}))
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    bad = [k for k in missing if not k.startswith(PRETRAIN_ONLY + ("logit_scale",))]
    if bad or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {bad[:5]}, unexpected {list(unexpected)[:5]}")
    return model.eval()
