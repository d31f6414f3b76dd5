"""Part segmentation head in the paper's style (Point-MAE / ReCon ShapeNetPart head).

Local tokens from three encoder depths are concatenated, pooled into a global context (max + mean,
plus an optional object-category embedding) and propagated back to every input point by
inverse-distance interpolation from the three nearest patch centres, then a per-point MLP gives
part logits. Parts of all categories share one label space; `part_names` are "category/part".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recon_serve.geometry.group import gather_points, knn, square_distance


def feature_layers(depth: int) -> tuple[int, ...]:
    """Which blocks feed the head: the official [3, 7, 11] for depth 12, spread evenly otherwise."""
    return tuple(sorted({max(0, round(depth * (i + 1) / 3) - 1) for i in range(3)}))


def interpolate(points: torch.Tensor, centres: torch.Tensor, feats: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Features [B,G,C] at centres [B,G,3] -> [B,N,C] at points [B,N,3], weights 1/distance^2 of the k nearest."""
    idx = knn(k, centres, points)  # [B,N,k]
    d = square_distance(points, centres).gather(2, idx)
    w = 1.0 / (d + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    return (gather_points(feats, idx) * w.unsqueeze(-1)).sum(2)


class _PointMLP(nn.Sequential):
    """Linear + BatchNorm + ReLU on channels-last points [B,N,C]."""

    def __init__(self, dims):
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), _BN(b), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class _BN(nn.BatchNorm1d):
    def forward(self, x):
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class SegHead(nn.Module):
    def __init__(self, dim: int, depth: int, num_parts: int, num_categories: int = 0, hidden: int = 256):
        super().__init__()
        self.layers = feature_layers(depth)
        c = dim * len(self.layers)
        self.num_categories = num_categories
        self.category_embed = nn.Sequential(nn.Linear(num_categories, 64), nn.BatchNorm1d(64), nn.LeakyReLU(0.2)) if num_categories else None
        self.propagate = _PointMLP([c + 3, hidden * 2, hidden])
        glob = 2 * c + (64 if num_categories else 0)
        self.mlp = nn.Sequential(_PointMLP([hidden + glob, hidden, hidden // 2]), nn.Dropout(0.5), nn.Linear(hidden // 2, num_parts))

    def forward(self, points, centres, layer_tokens, category: torch.Tensor | None = None) -> torch.Tensor:
        """Part logits [B,N,P] for points [B,N,3] given tokens [B,G,C] from the layers in self.layers."""
        feats = torch.cat(layer_tokens, dim=-1)
        glob = [feats.max(1).values, feats.mean(1)]
        if self.category_embed is not None:
            if category is None:
                raise ValueError("this segmentation head needs the object category")
            glob.append(self.category_embed(F.one_hot(category, self.num_categories).float()))
        local = self.propagate(torch.cat([interpolate(points, centres, feats), points], dim=-1))
        glob = torch.cat(glob, -1).unsqueeze(1).expand(-1, points.shape[1], -1)
        return self.mlp(torch.cat([local, glob], dim=-1))
