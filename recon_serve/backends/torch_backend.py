"""Inference with the PyTorch model itself: the reference path, and the one for GPUs without ORT-GPU.

On CUDA, FPS/kNN run in recon_serve's CUDA kernels when their extension builds (built here, at load,
rather than on the first request), and `bf16=True` runs the forward under bf16 autocast. No CUDA
graphs: request batches vary in size and point count, so each shape would need its own capture.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import torch

from recon_serve.backends.base import Backend, card_from_checkpoint, file_sha256


class TorchBackend(Backend):
    name = "torch"
    runs_in_process = True

    def __init__(self, checkpoint: str | Path, threads: int | None = None, device: str = "cpu", bf16: bool = False):
        from recon_serve.model.factory import create_model

        path = Path(checkpoint)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        if bf16 and self.device.type != "cuda":
            raise ValueError(f"bf16 autocast needs a CUDA device, not {device!r}")
        self.bf16 = bf16
        self.model, ckpt = create_model(path)
        self.model.to(self.device).eval()
        if self.device.type == "cuda":
            from recon_serve.ops import cuda_ops

            cuda_ops.extension()  # logs and falls back to torch FPS/kNN if it cannot build
        self.model_card = card_from_checkpoint(ckpt or {}, self.model, path, file_sha256(path))
        self.version = self.model_card["version"]
        self._lock = threading.Lock()  # one forward at a time: the batcher already groups requests

    def _precision(self):
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def infer(self, points: np.ndarray, parts: bool = False) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).to(self.device)
        with self._lock, self._precision():
            out = self.model(x)
        return {k: v.float().cpu().numpy() for k, v in out.items()}
