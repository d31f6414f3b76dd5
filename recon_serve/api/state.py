"""What the app holds between requests (backend, batcher, index, decoder, text cache), built by the lifespan."""
from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from fastapi import Request

from recon_serve.api.metrics import Metrics
from recon_serve.errors import EmbeddingUnavailable, ReloadFailed, Unauthorized
from recon_serve.settings import Settings

class TextEncoder:
    """The text teacher, loaded on first use (a few seconds), with label and query vectors cached.

    Labels are cached one by one (a request sharing labels with an earlier one pays only for the new
    ones) and encoded a few at a time, taking the teacher's lock per chunk, so one request with
    hundreds of labels delays another text request by one chunk, not by its whole list. Past the
    first chunk a request's encoding is paced (it rests as long as each chunk took), so a long list
    takes at most about half the CPU the model needs for everyone else."""

    CHUNK_PROMPTS = 32  # prompts per lock hold: 4 labels x 8 templates (1 label with the official 60)
    PACE = 1.0  # rest per second of encoding, after a request's first chunk
    PROMPT_BUDGET = 2048  # prompts one request may need encoded: 256 labels x 8 templates, 34 x the official 60

    def __init__(self, cache_size: int = 4096, tower: str = "minilm", prompts: str | None = None):
        from recon_serve.model.text import PROMPTS, parse_tower

        self.tower = parse_tower(tower)
        self.prompts = prompts if prompts in PROMPTS else "recon-serve"
        self._templates, self._words = PROMPTS[self.prompts]
        self.max_labels = max(1, self.PROMPT_BUDGET // len(self._templates))
        self.chunk = max(1, self.CHUNK_PROMPTS // len(self._templates))  # labels per lock hold
        self._lock = threading.Lock()
        self._teacher = None
        self._labels: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self.text_vector = lru_cache(maxsize=1024)(self._text_vector)

    def _get(self):
        with self._lock:
            if self._teacher is None:
                from recon_serve.model.text import load_tower

                self._teacher = load_tower(self.tower)
            return self._teacher

    def label_weights(self, labels: tuple[str, ...]) -> np.ndarray:
        """[len(labels), D] prompt-ensemble label vectors (recon_serve.model.text.zero_shot_weights)."""
        from recon_serve.model.text import zero_shot_weights

        missing = list(dict.fromkeys(l for l in labels if l not in self._labels))
        if missing:
            teacher = self._get()
            for i in range(0, len(missing), self.chunk):
                chunk = missing[i : i + self.chunk]
                t0 = time.perf_counter()
                with self._lock:
                    vectors = zero_shot_weights(teacher, chunk, self._templates, self._words).numpy()
                    for label, v in zip(chunk, vectors):
                        self._labels[label] = v
                if i and i + self.chunk < len(missing):
                    time.sleep((time.perf_counter() - t0) * self.PACE)
        with self._lock:
            out = []
            for label in labels:
                v = self._labels.get(label)
                if v is None:  # evicted by a concurrent request meanwhile: encode it alone
                    v = zero_shot_weights(self._teacher, [label], self._templates, self._words).numpy()[0]
                    self._labels[label] = v
                self._labels.move_to_end(label)
                out.append(v)
            while len(self._labels) > self._cache_size:
                self._labels.popitem(last=False)
        return np.stack(out)

    def _text_vector(self, text: str) -> np.ndarray:
        teacher = self._get()
        with self._lock:
            v = teacher([text])[0].numpy()
        return v / max(float(np.linalg.norm(v)), 1e-12)  # CLIP's features are not unit length


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    text: TextEncoder = field(default_factory=TextEncoder)
    backend: object = None
    batcher: object = None
    index: object = None
    decoder: object = None
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self) -> None:
        from recon_serve.backends import Batcher, load_backend
        from recon_serve.geometry.decode import Decoder
        from recon_serve.index import open_index

        s = self.settings
        self.backend = load_backend(s)
        try:
            self.text = text_encoder_for(self.backend.model_card, s)
        except Exception:
            self.close()
            raise
        self.batcher = Batcher(self.backend, s.max_batch, s.max_wait_ms, on_batch=self.metrics.on_batch,
                               inline_max_points=s.inline_max_points)
        self.index = open_index(s.index_dir, self.backend.model_card, self.backend.version)
        self.decoder = Decoder(s.decode_limits, workers=s.decode_workers, max_jobs=s.decode_max_jobs,
                               max_rss_bytes=s.decode_max_rss_mb << 20)
        self.metrics.index_size.set_function(lambda: len(self.index) if self.index is not None else 0)

    def reload(self) -> dict:
        """Switch to the model the settings now name (a repository's live version) without a failed
        request: load it beside the old one, check it, swap it into the batcher, then close the old."""
        from recon_serve.backends import load_backend

        with self._reload_lock:
            old = self.backend
            try:
                new = load_backend(self.settings, reload=True)
            except Exception as e:
                raise ReloadFailed(f"the new model did not load: {type(e).__name__}: {e}") from None
            if new.version == old.version:
                new.close()
                return {"changed": False, "model_version": old.version}
            try:
                check_backend(new, self.index.fields)
                text = text_encoder_for(new.model_card, self.settings, self.text)
            except Exception as e:
                new.close()
                raise ReloadFailed(f"the new model failed its check: {e}") from None
            self.text = text
            self.batcher.swap(new)
            self.backend = new
            old.close()
            return {"changed": True, "model_version": new.version, "previous": old.version}

    def close(self) -> None:
        for name in ("batcher", "decoder", "index", "backend"):
            obj = getattr(self, name)
            if obj is not None:
                obj.close()
                setattr(self, name, None)


def text_encoder_for(card: dict, settings: Settings, current: TextEncoder | None = None) -> TextEncoder:
    """The text encoder a model needs: the settings' tower, refused (TowerMismatch) when the model's
    embedding lives in another tower's space; `current` is kept when it already fits."""
    from recon_serve.model.text import check_tower, parse_tower

    check_tower(card, parse_tower(settings.text_tower))
    prompts = card.get("prompts") or "recon-serve"
    if current is not None and current.prompts == prompts and current.tower == parse_tower(settings.text_tower):
        return current
    return TextEncoder(tower=settings.text_tower, prompts=prompts)


def check_backend(backend, fields: dict[str, int]) -> None:
    """A model about to serve must give finite outputs of the index's sizes for a plain shape."""
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2, backend.num_points, 3)).astype(np.float32)
    pts /= np.linalg.norm(pts, axis=-1, keepdims=True)  # two unit spheres
    out = backend.infer(pts)
    for name, output in (("text", "embedding"), ("shape", "shape_embedding")):
        if name == "text" and not backend.model_card.get("embedding_dim"):
            continue  # a labels-only model: the embedding endpoints answer 409
        if name in fields:
            emb = np.asarray(out.get(output))
            if emb.shape != (2, fields[name]):
                raise ValueError(f"{output} shape {emb.shape}, the index holds {fields[name]}-d {name} vectors")
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"non-finite values in {k}")


# The dependencies below are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread
# pool, a thread hand-off on every request for what is an attribute read.
async def get_state(request: Request) -> AppState:
    return request.app.state.recon


def _check_key(request: Request, keys) -> None:
    given = request.headers.get("x-api-key", "")
    if not any(hmac.compare_digest(given.encode("utf-8", "replace"), k.encode()) for k in keys):
        raise Unauthorized("this endpoint needs a valid X-API-Key header")


async def require_api_key(request: Request) -> None:
    """Write endpoints: when API keys are configured, X-API-Key must be one of them."""
    keys = request.app.state.recon.settings.api_keys
    if keys:
        _check_key(request, keys)


async def require_embedding(request: Request) -> None:
    """Endpoints that need the text-aligned embedding (embed, zero-shot, search, the library): a model
    without one (an official fine-tune checkpoint has no projection) answers 409 saying why."""
    card = request.app.state.recon.backend.model_card
    if not card.get("embedding_dim"):
        raise EmbeddingUnavailable(
            "this model has no text-aligned embedding (a fine-tune checkpoint without text_proj, such as the "
            "official ModelNet40/ScanObjectNN ones): it serves /v1/classify only. For embeddings, zero-shot and "
            "search, serve a checkpoint with projections (the official pretrain or zero-shot checkpoint, with "
            "RECON_TEXT_TOWER=clip:ViT-B-32:/path/to/ViT-B-32.pt), or a recon-serve checkpoint")


async def require_read_key(request: Request) -> None:
    """Reading the library (records, search): when read keys are configured, X-API-Key must be a
    read or a write key, so the records cannot be enumerated without one."""
    s = request.app.state.recon.settings
    if s.read_keys:
        _check_key(request, (*s.read_keys, *s.api_keys))
