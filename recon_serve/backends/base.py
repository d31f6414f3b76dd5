"""One Backend interface, so the server never cares where inference runs (torch, ONNX Runtime, Triton).

`model_card` is the dict the export writes per version (labels, part names, points, embedding size),
plus `category_parts` when the checkpoint has it. `version` is the first 12 hex digits of the
source checkpoint's sha256: the same model gives the same version on every backend, so the index can
tell stale embeddings (made by another model) from current ones whichever backend made them.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class Backend(ABC):
    name: str = "base"
    runs_in_process: bool = False  # computes in this process (the batcher may call it on the event loop)
    model_card: dict
    version: str

    @abstractmethod
    def infer(self, points: np.ndarray, parts: bool = False) -> dict[str, np.ndarray]:
        """points [B,N,3] float32 (prepared) -> {'embedding' [B,D], 'logits' [B,K]?, 'shape_embedding' [B,E],
        'part_logits' [B,N,P]?}. part_logits only needs to be there with parts=True (and a seg head):
        a backend may then run a smaller graph; it may also return more than asked."""

    def close(self) -> None:
        """Release sessions or connections."""

    @property
    def num_points(self) -> int:
        return int(self.model_card.get("num_points") or 1024)

    @property
    def min_points(self) -> int:
        """Fewest points per shape the graph accepts (FPS needs at least num_group, kNN group_size)."""
        cfg = self.model_card.get("config") or {}
        return int(max(cfg.get("num_group", 1), cfg.get("group_size", 1)))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_from_checkpoint(ckpt: dict, model, path: Path, sha256: str) -> dict:
    """A model card like the export's model_card.json, built straight from a checkpoint."""
    cfg = model.cfg
    return {
        "version": sha256[:12],
        "config_name": cfg.name,
        "config": cfg.to_dict(),
        "class_names": list(ckpt.get("class_names") or []),
        "part_names": list(ckpt.get("part_names") or []),
        "category_parts": ckpt.get("category_parts") or {},
        "normalisation": ckpt.get("normalisation"),
        "num_points": cfg.num_points,
        "embedding_dim": model.embedding_dim,
        "shape_embedding_dim": model.shape_embedding_dim,
        "zero_shot_temperature": ckpt.get("zero_shot_temperature"),
        "teacher": ckpt.get("teacher"),
        "prompts": ckpt.get("prompts") or "recon-serve",
        "class_names_source": ckpt.get("class_names_source"),
        "metrics": ckpt.get("metrics") or {},
        "source_checkpoint": {"path": str(path), "sha256": sha256},
    }


def version_of(card: dict) -> str:
    sha = (card.get("source_checkpoint") or {}).get("sha256")
    return sha[:12] if sha else str(card.get("version", "unknown"))
