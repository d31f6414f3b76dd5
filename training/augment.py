"""Augmentations of the paper's recipes, on batches of normalised clouds [B, N, 3]."""
from __future__ import annotations

import torch


def scale_and_translate(x: torch.Tensor, scale=(2 / 3, 3 / 2), shift: float = 0.2) -> torch.Tensor:
    """Per-cloud anisotropic scale and translation (ReCon's PointcloudScaleAndTranslate)."""
    B = x.shape[0]
    s = torch.empty(B, 1, 3, device=x.device).uniform_(*scale)
    t = torch.empty(B, 1, 3, device=x.device).uniform_(-shift, shift)
    return x * s + t


def shuffle_points(x: torch.Tensor) -> torch.Tensor:
    """Random point order per cloud: FPS starts at index 0, so this varies the chosen centres."""
    idx = torch.rand(x.shape[:2], device=x.device).argsort(1)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
