"""Farthest point sampling and kNN grouping: the pure-torch reference.

These are the reference implementations every faster kernel (ONNX custom op, TensorRT plugin)
is checked against. They are batched and deterministic: FPS starts at a given index (0 by default).
`skip_origin` reproduces pointnet2_ops' CUDA FPS, which the official ReCon code uses: a point with
|p|^2 <= 1e-3 (near the centre of a normalised cloud) is never chosen as a later centre.

`group()` is what the model calls. For ONNX export, `grouping_mode(...)` swaps the FPS/kNN it uses:
"scan" (FPS as a torch scan, so the ONNX graph holds one Scan instead of npoint unrolled steps) or
"custom_op" (the `recon_serve::` torch custom ops, exported as custom-domain ONNX nodes). Training
and eager inference keep the reference; on a CUDA tensor `fps_indices` / `knn_indices` hand it to
recon_serve's CUDA kernels (ops/cuda_ops.py: same indices, one launch) when their extension builds.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

GROUPING_MODES = ("reference", "scan", "custom_op")
_mode = "reference"


SKIP_ORIGIN_RADIUS2 = 1e-3  # pointnet2_ops: `if (mag <= 1e-3) continue;`


def _skipped(xyz: torch.Tensor) -> torch.Tensor:
    """[B, N] True where pointnet2_ops' FPS ignores the point (|p|^2 <= 1e-3, summed x, y, z in order)."""
    return xyz[..., 0] * xyz[..., 0] + xyz[..., 1] * xyz[..., 1] + xyz[..., 2] * xyz[..., 2] <= SKIP_ORIGIN_RADIUS2


def _fps_step(xyz, dist, far, skip):
    """One FPS update: the new centre's distances folded into `dist`; skipped points stay at -1, so
    they are never the farthest (and a cloud of skipped points only repeats its start index, as
    pointnet2_ops does)."""
    centre = torch.gather(xyz, 1, far.view(-1, 1, 1).expand(-1, 1, 3))  # [B,1,3]
    dist = torch.minimum(dist, ((xyz - centre) ** 2).sum(-1))
    if skip is not None:
        dist = torch.where(skip, torch.full_like(dist, -1.0), dist)
    return dist, dist.argmax(-1)


def farthest_point_sample(xyz: torch.Tensor, npoint: int, start: int | torch.Tensor = 0,
                          skip_origin: bool = False) -> torch.Tensor:
    """Indices [B, npoint] of points chosen by iterative farthest point sampling.

    `start` is the first index (an int for every cloud, or a [B] tensor), so results are reproducible.
    """
    B, N, _ = xyz.shape
    if npoint > N:
        raise ValueError(f"cannot sample {npoint} centres from {N} points")
    idx = torch.empty(B, npoint, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), dtype=xyz.dtype, device=xyz.device)
    far = torch.as_tensor(start, dtype=torch.long, device=xyz.device).expand(B).clone()
    skip = _skipped(xyz) if skip_origin else None
    for i in range(npoint):
        idx[:, i] = far
        dist, far = _fps_step(xyz, dist, far, skip)
    return idx


def farthest_point_sample_scan(xyz: torch.Tensor, npoint: int, skip_origin: bool = False) -> torch.Tensor:
    """FPS from index 0 as a `torch._higher_order_ops.scan`: same indices as the reference.

    The dynamo exporter turns the scan into one ONNX Scan node, so the graph does not grow with npoint
    and N stays dynamic. Eager it is slower than the plain loop, hence export-only.
    """
    from torch._higher_order_ops.scan import scan

    B, N, _ = xyz.shape
    if npoint > N:
        raise ValueError(f"cannot sample {npoint} centres from {N} points")

    skip = _skipped(xyz) if skip_origin else None

    def step(carry, _):
        dist, far = carry
        return _fps_step(xyz, dist, far, skip), far.clone()  # a scan output may not alias the carry

    init = (xyz.new_full((B, N), float("inf")), torch.zeros(B, dtype=torch.long, device=xyz.device))
    _, idx = scan(step, init, xyz.new_zeros(npoint, 1))
    return idx.transpose(0, 1)  # [npoint,B] -> [B,npoint]


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [B, M, N] between a [B, M, 3] and b [B, N, 3]."""
    return ((a.unsqueeze(2) - b.unsqueeze(1)) ** 2).sum(-1)


def knn(k: int, xyz: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Indices [B, M, k] of the k nearest points of xyz [B, N, 3] to each query [B, M, 3], nearest first."""
    if k > xyz.shape[1]:
        raise ValueError(f"k={k} exceeds the {xyz.shape[1]} points available")
    return square_distance(query, xyz).topk(k, dim=-1, largest=False, sorted=True).indices


def _cuda_ops(x: torch.Tensor):
    """recon_serve.ops.cuda_ops when it can take x (a float32 CUDA tensor, extension built), else None."""
    if not x.is_cuda:  # CPU tensors never reach the import: the CPU path stays exactly the reference
        return None
    from recon_serve.ops import cuda_ops

    return cuda_ops if cuda_ops.supports(x) else None


def fps_indices(xyz: torch.Tensor, npoint: int, skip_origin: bool = False) -> torch.Tensor:
    """farthest_point_sample from index 0 on the fastest exact path for xyz's device."""
    ops = _cuda_ops(xyz)
    if ops is not None and npoint <= xyz.shape[1]:
        return ops.farthest_point_sample(xyz, npoint, skip_origin=skip_origin)
    return farthest_point_sample(xyz, npoint, skip_origin=skip_origin)


def knn_indices(k: int, xyz: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """knn on the fastest exact path for the tensors' device."""
    ops = _cuda_ops(xyz)
    if ops is not None and k <= min(ops.MAX_K, xyz.shape[1]) and query.dtype == xyz.dtype and query.device == xyz.device:
        return ops.knn(k, xyz, query)
    return knn(k, xyz, query)


def gather_points(xyz: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """xyz [B, N, C] indexed by idx [B, ...] -> [B, ..., C]."""
    B = xyz.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(xyz, 1, flat.unsqueeze(-1).expand(-1, -1, xyz.shape[-1]))
    return out.reshape(*idx.shape, xyz.shape[-1])


@contextlib.contextmanager
def grouping_mode(mode: str) -> Iterator[None]:
    """Use `mode` ("reference" | "scan" | "custom_op") for FPS/kNN inside `group()` while in the block (export time)."""
    global _mode
    if mode not in GROUPING_MODES:
        raise ValueError(f"unknown grouping mode {mode!r}; choose from {GROUPING_MODES}")
    previous, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = previous


def current_grouping_mode() -> str:
    return _mode


def grouping_indices(xyz: torch.Tensor, num_group: int, group_size: int,
                     skip_origin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre indices [B,G], neighbour indices [B,G,S]) in the current grouping mode: what exports check exactly."""
    centre_idx, _, patch_idx = _select(xyz, num_group, group_size, skip_origin)
    return centre_idx, patch_idx


def _select(xyz: torch.Tensor, num_group: int, group_size: int, skip_origin: bool = False):
    if _mode == "custom_op":
        import recon_serve.ops.torch_ops  # noqa: F401  (registers torch.ops.recon_serve)

        centre_idx = torch.ops.recon_serve.farthest_point_sample(xyz, num_group, skip_origin)
        centres = gather_points(xyz, centre_idx)
        return centre_idx, centres, torch.ops.recon_serve.knn(xyz, centres, group_size)
    if _mode == "scan":
        centre_idx = farthest_point_sample_scan(xyz, num_group, skip_origin=skip_origin)
    else:
        centre_idx = fps_indices(xyz, num_group, skip_origin=skip_origin)
    centres = gather_points(xyz, centre_idx)
    return centre_idx, centres, knn_indices(group_size, xyz, centres)


def group(xyz: torch.Tensor, num_group: int, group_size: int, skip_origin: bool = False):
    """FPS centres + kNN patches, as ReCon/Point-MAE: returns (patches relative to centre [B,G,S,3], centres [B,G,3])."""
    _, centres, patch_idx = _select(xyz, num_group, group_size, skip_origin)
    patches = gather_points(xyz, patch_idx) - centres.unsqueeze(2)
    return patches, centres
