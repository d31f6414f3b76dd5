"""What the app holds between requests (backend, batcher, index, decoder, text cache), built by the lifespan."""
from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from fastapi import Request

from recon_serve.api.metrics import Metrics
from recon_serve.errors import Unauthorized
from recon_serve.settings import Settings

MAX_LABELS = 256


class TextEncoder:
    """The text teacher, loaded on first use (a few seconds), with cached label and query vectors."""

    def __init__(self):
        self._lock = threading.Lock()
        self._teacher = None
        self.label_weights = lru_cache(maxsize=64)(self._label_weights)
        self.text_vector = lru_cache(maxsize=1024)(self._text_vector)

    def _get(self):
        with self._lock:
            if self._teacher is None:
                from recon_serve.model.text import load_teacher

                self._teacher = load_teacher()
            return self._teacher

    def _label_weights(self, labels: tuple[str, ...]) -> np.ndarray:
        from recon_serve.model.text import zero_shot_weights

        teacher = self._get()
        with self._lock:
            return zero_shot_weights(teacher, list(labels)).numpy()

    def _text_vector(self, text: str) -> np.ndarray:
        teacher = self._get()
        with self._lock:
            return teacher([text])[0].numpy()


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    text: TextEncoder = field(default_factory=TextEncoder)
    backend: object = None
    batcher: object = None
    index: object = None
    decoder: object = None

    def open(self) -> None:
        from recon_serve.backends import Batcher, load_backend
        from recon_serve.geometry.decode import Decoder
        from recon_serve.index import ShapeIndex

        s = self.settings
        self.backend = load_backend(s)
        self.batcher = Batcher(self.backend, s.max_batch, s.max_wait_ms, on_batch=self.metrics.on_batch)
        dim = int(self.backend.model_card.get("embedding_dim") or 384)
        path = Path(s.index_dir)
        if (path / "index.json").is_file():
            self.index = ShapeIndex.open(path, model_version=self.backend.version)
        else:
            self.index = ShapeIndex(path, dim=dim, model_version=self.backend.version)
        self.decoder = Decoder(s.decode_limits, workers=s.decode_workers)
        self.metrics.index_size.set_function(lambda: len(self.index) if self.index is not None else 0)

    def close(self) -> None:
        for name in ("batcher", "decoder", "index", "backend"):
            obj = getattr(self, name)
            if obj is not None:
                obj.close()
                setattr(self, name, None)


def get_state(request: Request) -> AppState:
    return request.app.state.recon


def require_api_key(request: Request) -> None:
    """Write endpoints: when API keys are configured, X-API-Key must be one of them."""
    keys = get_state(request).settings.api_keys
    if not keys:
        return
    given = request.headers.get("x-api-key", "")
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise Unauthorized("this endpoint needs a valid X-API-Key header")
