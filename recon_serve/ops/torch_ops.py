"""`torch.ops.recon_serve.*`: FPS and kNN as opaque torch custom ops.

torch.export keeps them as single nodes, which the ONNX exporter maps to custom-domain nodes that the
C++ kernel library (csrc/point_ops.cc) implements. The eager bodies are the pure-torch reference (on CUDA
tensors the CUDA kernels, when built: same indices), so a model in "custom_op" grouping mode still runs
(and gives the same results) without ONNX Runtime.
"""
from __future__ import annotations

import torch

from recon_serve.geometry import group as ref


@torch.library.custom_op("recon_serve::farthest_point_sample", mutates_args=())
def farthest_point_sample(points: torch.Tensor, npoint: int, skip_origin: bool = False) -> torch.Tensor:
    """Indices [B, npoint] (int64) by FPS from index 0 (skip_origin: pointnet2_ops' rule)."""
    return ref.fps_indices(points, npoint, skip_origin=skip_origin)


@farthest_point_sample.register_fake
def _(points: torch.Tensor, npoint: int, skip_origin: bool = False) -> torch.Tensor:
    return points.new_empty((points.shape[0], npoint), dtype=torch.long)


@torch.library.custom_op("recon_serve::knn", mutates_args=())
def knn(points: torch.Tensor, query: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, M, k] (int64) of the k points nearest each query, nearest first."""
    return ref.knn_indices(k, points, query)


@knn.register_fake
def _(points: torch.Tensor, query: torch.Tensor, k: int) -> torch.Tensor:
    return query.new_empty((query.shape[0], query.shape[1], k), dtype=torch.long)
