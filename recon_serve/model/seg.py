"""Part segmentation head in the paper's style (Point-MAE / ReCon ShapeNetPart head).

Local tokens from three encoder depths are concatenated, pooled into a global context (max + mean,
plus an optional object-category embedding) and propagated back to every input point by
inverse-distance interpolation from the three nearest patch centres, then a per-point MLP gives
part logits. Parts of all categories share one label space; `part_names` are "category/part".

Optionally (`local_k` > 0) each point also gets a descriptor of its own neighbourhood: a small
PointNet over the offsets to its k nearest input points. Patch centres are too sparse to see parts
that cover 1-2 % of a shape (a chimney, drawer handles); the neighbourhood can.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recon_serve.geometry.group import gather_points, square_distance


def feature_layers(depth: int) -> tuple[int, ...]:
    """Which blocks feed the head: the official [3, 7, 11] for depth 12, spread evenly otherwise."""
    return tuple(sorted({max(0, round(depth * (i + 1) / 3) - 1) for i in range(3)}))


def interpolate(points: torch.Tensor, centres: torch.Tensor, feats: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Features [B,G,C] at centres [B,G,3] -> [B,N,C] at points [B,N,3], weights 1/distance^2 of the k nearest."""
    d = square_distance(points, centres)  # [B,N,G]
    near = d.topk(k, dim=-1, largest=False).indices  # [B,N,k]
    w = 1.0 / (d.gather(2, near) + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    # as a dense [B,N,G] weight matrix times the features: one matmul, also backwards
    return torch.zeros_like(d).scatter(2, near, w) @ feats


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


def _after_first(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run every module of `seq` but its first (whose Linear the caller applied piecewise)."""
    for module in list(seq)[1:]:
        x = module(x)
    return x


class LocalGeometry(nn.Module):
    """Per-point descriptor [B,N,dim] of the k nearest input points: their mean offset (large on
    edges and borders) and covariance (the surface's normal and curvature), through a small MLP.

    Fixed statistics rather than a PointNet over the k neighbours: a learned layer over [B,N,k,C]
    tripled the head's training step on CPU, the statistics cost a few percent.
    """

    def __init__(self, k: int, dim: int = 64):
        super().__init__()
        self.k = k
        self.mlp = _PointMLP([9, dim, dim])

    @staticmethod
    def statistics(points: torch.Tensor, k: int) -> torch.Tensor:
        """[B,N,9]: mean offset (3) and the 6 distinct covariance entries of the k nearest points."""
        with torch.no_grad():  # rank by |b|^2 - 2ab (|a|^2 is the same along a row): no [B,N,N,3] tensor
            rank = (points * points).sum(-1).unsqueeze(1) - 2 * points @ points.transpose(1, 2)
            idx = rank.topk(min(k, points.shape[1]), dim=-1, largest=False).indices  # [B,N,k]
        offsets = gather_points(points, idx) - points.unsqueeze(2)  # [B,N,k,3]
        mean = offsets.mean(2)
        centred = offsets - mean.unsqueeze(2)
        cov = centred.transpose(2, 3) @ centred / offsets.shape[2]  # [B,N,3,3]
        rows, cols = torch.triu_indices(3, 3)
        return torch.cat([mean, cov[..., rows, cols]], dim=-1) * 10.0  # offsets are ~0.05: bring to ~1

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        kind = points.device.type
        if torch.is_autocast_enabled(kind):  # bf16 distances would pick the wrong neighbours
            with torch.autocast(kind, enabled=False):
                return self.mlp(self.statistics(points.float(), self.k))
        return self.mlp(self.statistics(points, self.k))


class SegHead(nn.Module):
    def __init__(self, dim: int, depth: int, num_parts: int, num_categories: int = 0, hidden: int = 256,
                 local_k: int = 0, local_dim: int = 64):
        super().__init__()
        self.layers = feature_layers(depth)
        c = dim * len(self.layers)
        self.token_dim, self.hidden = c, hidden
        self.num_categories = num_categories
        self.category_embed = nn.Sequential(nn.Linear(num_categories, 64), nn.BatchNorm1d(64), nn.LeakyReLU(0.2)) if num_categories else None
        self.local = LocalGeometry(local_k, local_dim) if local_k else None
        self.propagate = _PointMLP([c + 3 + (local_dim if local_k else 0), hidden * 2, hidden])
        glob = 2 * c + (64 if num_categories else 0)
        self.mlp = nn.Sequential(_PointMLP([hidden + glob, hidden, hidden // 2]), nn.Dropout(0.5), nn.Linear(hidden // 2, num_parts))

    def forward(self, points, centres, layer_tokens, category: torch.Tensor | None = None) -> torch.Tensor:
        """Part logits [B,N,P] for points [B,N,3] given tokens [B,G,C] from the layers in self.layers.

        The maths is the concatenation form [interpolated tokens, xyz, local] -> MLP and
        [point feature, global context] -> MLP, but each first Linear is split by input: the token
        part runs at the G centres before interpolating (a linear map commutes with interpolation,
        whose weights sum to 1) and the global part once per shape, not once per point. Same
        weights, about a third of the work.
        """
        feats = torch.cat(layer_tokens, dim=-1)
        glob = [feats.max(1).values, feats.mean(1)]
        if self.category_embed is not None:
            if category is None:
                raise ValueError("this segmentation head needs the object category")
            glob.append(self.category_embed(F.one_hot(category, self.num_categories).float()))
        c = self.token_dim
        first = self.propagate[0]
        x = interpolate(points, centres, F.linear(feats, first.weight[:, :c]))
        x = x + F.linear(points, first.weight[:, c:c + 3], first.bias)
        if self.local is not None:
            x = x + F.linear(self.local(points), first.weight[:, c + 3:])
        x = _after_first(self.propagate, x)
        head = self.mlp[0]
        h = self.hidden
        ctx = F.linear(torch.cat(glob, -1), head[0].weight[:, h:], head[0].bias)  # [B, hidden]
        x = _after_first(head, F.linear(x, head[0].weight[:, :h]) + ctx.unsqueeze(1))
        return _after_first(self.mlp, x)

    def load_grown(self, state: dict) -> None:
        """Start from a trained head without local features: every weight is copied and the first
        Linear's new input columns (the local descriptor) start at zero, so training begins at the
        old head's answers."""
        own = self.state_dict()
        for name, value in state.items():
            if name not in own:
                continue
            if own[name].shape == value.shape:
                own[name] = value
            elif name == "propagate.0.weight" and own[name].shape[0] == value.shape[0]:
                own[name] = torch.cat([value, value.new_zeros(value.shape[0], own[name].shape[1] - value.shape[1])], 1)
            else:
                raise ValueError(f"seg head weight {name}: {tuple(value.shape)} does not fit {tuple(own[name].shape)}")
        self.load_state_dict(own)
