"""Inference with the PyTorch model itself: the reference path, and the one for GPUs without ORT-GPU."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from recon_serve.backends.base import Backend, card_from_checkpoint, file_sha256


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint: str | Path, threads: int | None = None, device: str = "cpu"):
        from recon_serve.model.factory import create_model

        path = Path(checkpoint)
        if threads:
            torch.set_num_threads(threads)
        self.model, ckpt = create_model(path)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.model_card = card_from_checkpoint(ckpt or {}, self.model, path, file_sha256(path))
        self.version = self.model_card["version"]
        self._lock = threading.Lock()  # one forward at a time: the batcher already groups requests

    @torch.no_grad()
    def infer(self, points: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).to(self.device)
        with self._lock:
            out = self.model(x)
        return {k: v.float().cpu().numpy() for k, v in out.items()}
