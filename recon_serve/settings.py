"""One settings object for the server, read from RECON_* environment variables, then CLI overrides.

A plain dataclass (no pydantic-settings): every field has a default, `from_env` parses the
environment once, and `replace(**overrides)` applies command-line flags on top.

    RECON_CHECKPOINT        checkpoint .pt, or a model repository / version directory (default: shipped model)
    RECON_BACKEND           onnxruntime (default) | torch | http://triton-host:8000
    RECON_TRITON_MODEL      model name on a Triton backend: recon_python (default) or recon_onnx (NGC images)
    RECON_INDEX_DIR         shape index directory (default: index)
    RECON_CACHE_DIR         where exported ONNX graphs are cached (default: ~/.cache/recon-serve/onnx)
    RECON_MAX_UPLOAD_BYTES, RECON_MAX_POINTS, RECON_MAX_FACES, RECON_DECODE_TIMEOUT_S, RECON_DECODE_WORKERS,
                            RECON_DECODE_CPU_S, RECON_DECODE_MAX_JOBS, RECON_DECODE_MAX_RSS_MB (the decode pool)
    RECON_MAX_SAMPLE_POINTS largest n_points a request may ask for
    RECON_MAX_BATCH, RECON_MAX_WAIT_MS   request batching
    RECON_INLINE_MAX_POINTS  a lone request of up to this many points runs its model call on the event
                            loop, without the two thread hand-offs (default 2048; 0: never)
    RECON_API_KEYS          comma-separated; when set, write endpoints need the X-API-Key header
    RECON_READ_KEYS         comma-separated; when set, reading the library (GET /v1/shapes/..., search)
                            needs X-API-Key too, one of these or of the write keys
    RECON_CORS_ORIGINS      comma-separated browser origins allowed to call the API (default: none;
                            POSTs and DELETEs carrying another Origin header get 403)
    RECON_HEADER_TIMEOUT_S, RECON_BODY_TIMEOUT_S   a request's head / body must arrive within these
    RECON_THREADS           intra-op threads for torch / ONNX Runtime (default: library default)
    RECON_DEVICE            torch backend's device: cpu (default) | cuda | cuda:N
    RECON_BF16              1: the torch backend on CUDA runs under bf16 autocast (default 0: fp32)
    RECON_INT8              1: the onnxruntime backend's global graph (all but /v1/segment) is int8
                            (dynamic quantisation of MatMul/Gemm weights; default 0: fp32)
    RECON_TEXT_TOWER        minilm (default) | clip:ARCH:PATH (CLIP's text tower from a local weights file,
                            e.g. clip:ViT-B-32:/models/ViT-B-32.pt; the official ReCon checkpoints need it)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from recon_serve.geometry.decode import MiB, DecodeLimits


def _default_cache() -> str:
    return str(Path(os.environ.get("RECON_SERVE_CACHE", Path.home() / ".cache" / "recon-serve")) / "onnx")


@dataclass(frozen=True)
class Settings:
    checkpoint: str | None = None
    backend: str = "onnxruntime"
    triton_model: str = "recon_python"
    index_dir: str = "index"
    cache_dir: str = field(default_factory=_default_cache)
    max_upload_bytes: int = 64 * MiB
    max_points: int = 2_000_000
    max_faces: int = 4_000_000
    decode_timeout_s: float = 30.0
    decode_workers: int = 2  # one slow or hostile upload then leaves a worker for everyone else
    decode_cpu_s: float = 10.0
    decode_max_jobs: int = 200  # a worker is replaced after this many uploads...
    decode_max_rss_mb: int = 1024  # ...or once its resident memory passes this
    max_sample_points: int = 16_384
    max_batch: int = 16
    max_wait_ms: float = 5.0
    inline_max_points: int = 2048
    api_keys: tuple[str, ...] = ()
    read_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    threads: int | None = None
    device: str = "cpu"
    bf16: bool = False
    int8: bool = False
    text_tower: str = "minilm"

    @classmethod
    def from_env(cls, env=None, **overrides) -> "Settings":
        """Settings from RECON_<FIELD> variables; keyword overrides (None = not given) win."""
        env = os.environ if env is None else env
        values = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"RECON_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in _LISTS:
            if isinstance(values.get(name), str):
                values[name] = _parse(name, values[name])
        return cls(**values)

    def replace(self, **overrides) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(max_bytes=self.max_upload_bytes, max_points=self.max_points,
                            max_faces=self.max_faces, timeout_s=self.decode_timeout_s, cpu_s=self.decode_cpu_s)


_INTS = {"max_upload_bytes", "max_points", "max_faces", "decode_workers", "decode_max_jobs", "decode_max_rss_mb", "max_sample_points", "max_batch", "inline_max_points", "threads"}
_FLOATS = {"decode_timeout_s", "decode_cpu_s", "max_wait_ms", "header_timeout_s", "body_timeout_s"}
_LISTS = {"api_keys", "read_keys", "cors_origins"}
_BOOLS = {"bf16", "int8"}


def _parse(name: str, raw: str):
    try:
        if name in _INTS:
            return int(raw)
        if name in _FLOATS:
            return float(raw)
    except ValueError:
        raise ValueError(f"RECON_{name.upper()}={raw!r} is not a number") from None
    if name in _BOOLS:
        if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"RECON_{name.upper()}={raw!r} is not a boolean (1/0, true/false)")
        return raw.strip().lower() in ("1", "true", "yes")
    if name in _LISTS:
        return tuple(k.strip() for k in raw.split(",") if k.strip())
    return raw
