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


def rotate_about_up(x: torch.Tensor) -> torch.Tensor:
    """A uniform random rotation about the model's up axis (z) per cloud."""
    a = torch.rand(x.shape[0], device=x.device) * (2 * torch.pi)
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    R = torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(-1, 3, 3).to(x.dtype)
    return x @ R.transpose(1, 2)


def point_dropout(x: torch.Tensor, max_ratio: float = 0.875) -> torch.Tensor:
    """PointNet++'s random point dropout: each cloud drops a U(0, max_ratio) share of its points,
    replaced by copies of its first point (shapes stay [B, N, 3], so batches stay dense)."""
    ratio = torch.rand(x.shape[0], 1, device=x.device) * max_ratio
    drop = torch.rand(x.shape[:2], device=x.device) < ratio
    drop[:, 0] = False
    return torch.where(drop.unsqueeze(-1), x[:, :1].expand_as(x), x)
