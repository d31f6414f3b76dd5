"""Farthest point sampling and kNN grouping: the pure-torch reference.

These are the reference implementations every faster kernel (ONNX custom op, TensorRT plugin)
is checked against. They are batched and deterministic: FPS starts at a given index (0 by default).
"""
from __future__ import annotations

import torch


def farthest_point_sample(xyz: torch.Tensor, npoint: int, start: int | torch.Tensor = 0) -> torch.Tensor:
    """Indices [B, npoint] of points chosen by iterative farthest point sampling.

    `start` is the first index (an int for every cloud, or a [B] tensor), so results are reproducible.
    """
    B, N, _ = xyz.shape
    if npoint > N:
        raise ValueError(f"cannot sample {npoint} centres from {N} points")
    idx = torch.empty(B, npoint, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), dtype=xyz.dtype, device=xyz.device)
    far = torch.as_tensor(start, dtype=torch.long, device=xyz.device).expand(B).clone()
    batch = torch.arange(B, device=xyz.device)
    for i in range(npoint):
        idx[:, i] = far
        centre = xyz[batch, far].unsqueeze(1)  # [B,1,3]
        dist = torch.minimum(dist, ((xyz - centre) ** 2).sum(-1))
        far = dist.argmax(-1)
    return idx


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [B, M, N] between a [B, M, 3] and b [B, N, 3]."""
    return ((a.unsqueeze(2) - b.unsqueeze(1)) ** 2).sum(-1)


def knn(k: int, xyz: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Indices [B, M, k] of the k nearest points of xyz [B, N, 3] to each query [B, M, 3], nearest first."""
    if k > xyz.shape[1]:
        raise ValueError(f"k={k} exceeds the {xyz.shape[1]} points available")
    return square_distance(query, xyz).topk(k, dim=-1, largest=False, sorted=True).indices


def gather_points(xyz: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """xyz [B, N, C] indexed by idx [B, ...] -> [B, ..., C]."""
    B = xyz.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(xyz, 1, flat.unsqueeze(-1).expand(-1, -1, xyz.shape[-1]))
    return out.reshape(*idx.shape, xyz.shape[-1])


def group(xyz: torch.Tensor, num_group: int, group_size: int):
    """FPS centres + kNN patches, as ReCon/Point-MAE: returns (patches relative to centre [B,G,S,3], centres [B,G,3])."""
    centre_idx = farthest_point_sample(xyz, num_group)
    centres = gather_points(xyz, centre_idx)
    patch_idx = knn(group_size, xyz, centres)
    patches = gather_points(xyz, patch_idx) - centres.unsqueeze(2)
    return patches, centres
