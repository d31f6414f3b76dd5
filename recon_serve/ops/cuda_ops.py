"""FPS and kNN on CUDA tensors through recon_serve's own kernels (ops/cuda), built on first use.

Same indices as the torch reference (geometry/group.py), in one launch per op instead of one small
kernel chain per FPS step. The extension is built by torch.utils.cpp_extension.load into torch's
extension cache ($TORCH_EXTENSIONS_DIR) the first time it is asked for; if that fails (no nvcc, a CPU
torch...) the reason is logged once and `supports()` says False, so callers keep the torch path.
RECON_SERVE_CUDA_OPS=0 turns the kernels off.
"""
from __future__ import annotations

import logging
import os
import threading

import torch

from recon_serve.ops.cuda_toolchain import BINDING, CUDA_DIR, KERNELS

log = logging.getLogger(__name__)

NAME = "recon_point_ops_cuda"
MAX_K = 64  # RECON_KNN_MAX_K in point_ops_cuda.h
_lock = threading.Lock()
_state: dict = {}


def enabled() -> bool:
    return os.environ.get("RECON_SERVE_CUDA_OPS", "1") != "0" and torch.cuda.is_available()


def extension():
    """The compiled module (cached per process), or None with the reason in `load_error()`."""
    if "ext" in _state:
        return _state["ext"]
    with _lock:
        if "ext" not in _state:
            _state["ext"], _state["error"] = None, None
            if not enabled():
                _state["error"] = "CUDA unavailable or RECON_SERVE_CUDA_OPS=0"
            else:
                try:
                    from torch.utils.cpp_extension import load

                    _state["ext"] = load(NAME, [str(BINDING), str(KERNELS)], extra_include_paths=[str(CUDA_DIR)],
                                         extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "--fmad=false"])
                except Exception as e:  # noqa: BLE001  (any failure means: the torch path)
                    _state["error"] = f"{type(e).__name__}: {e}"
                    log.warning("recon_serve CUDA kernels unavailable, FPS/kNN use torch: %s", e)
    return _state["ext"]


def load_error() -> str | None:
    return _state.get("error")


def set_enabled(flag: bool) -> None:
    """Switch the kernels off (False) or back on for this process: for A/B timings against the torch path."""
    _state["off"] = not flag


def supports(x: torch.Tensor) -> bool:
    """True when the kernels can take x: a float32 CUDA tensor, the extension built, not switched off."""
    return x.is_cuda and x.dtype == torch.float32 and not _state.get("off") and extension() is not None


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def farthest_point_sample(points: torch.Tensor, npoint: int, skip_origin: bool = False,
                          force_global: bool = False) -> torch.Tensor:
    """Indices [B, npoint] int64 by FPS from index 0, as group.farthest_point_sample (force_global: test the
    global-memory path)."""
    points = points.contiguous()
    with torch.cuda.device(points.device):
        return extension().farthest_point_sample(points, int(npoint), bool(skip_origin), _stream(points.device),
                                                 force_global)


def knn(k: int, points: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Indices [B, M, k] int64 of the k nearest points, nearest first (ties to the lower index), as group.knn."""
    points, query = points.contiguous(), query.contiguous()
    with torch.cuda.device(points.device):
        return extension().knn(int(k), points, query, _stream(points.device))
