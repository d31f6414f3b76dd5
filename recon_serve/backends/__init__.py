"""Where inference runs: `load_backend(settings)` picks torch, ONNX Runtime or a Triton server."""
from __future__ import annotations

from recon_serve.backends.base import Backend
from recon_serve.backends.batcher import Batcher


def load_backend(settings, reload: bool = False) -> Backend:
    """The backend the settings name; reload=True first asks a Triton server to load its live version."""
    from recon_serve.model.factory import DEFAULT_CHECKPOINT

    checkpoint = settings.checkpoint or str(DEFAULT_CHECKPOINT)
    kind = settings.backend
    if kind != "torch" and (settings.device != "cpu" or settings.bf16):
        raise ValueError(f"--device / --bf16 (RECON_DEVICE / RECON_BF16) apply to the torch backend, not {kind!r}")
    if settings.int8 and kind not in ("onnxruntime", "ort"):
        raise ValueError(f"--int8 (RECON_INT8) applies to the onnxruntime backend, not {kind!r}")
    if kind == "torch":
        from recon_serve.backends.torch_backend import TorchBackend

        return TorchBackend(checkpoint, threads=settings.threads, device=settings.device, bf16=settings.bf16)
    if kind in ("onnxruntime", "ort"):
        from recon_serve.backends.ort_backend import OrtBackend

        return OrtBackend(checkpoint, settings.cache_dir, threads=settings.threads, int8=settings.int8)
    if kind.startswith(("http://", "https://", "triton://")):
        from recon_serve.backends.triton_backend import TritonBackend, load_live_version

        if reload:
            load_live_version(kind.replace("triton://", "http://", 1), settings.triton_model)
        return TritonBackend(kind.replace("triton://", "http://", 1), repository=settings.checkpoint,
                             model=settings.triton_model)
    raise ValueError(f"backend must be onnxruntime, torch or a Triton URL (http://host:port), not {kind!r}")


__all__ = ["Backend", "Batcher", "load_backend"]
