"""A shape request, read once: multipart (`file` + form fields) or JSON (`points` + keys), then the
straight line decode -> sample/normalise (`prepare`) -> batched inference.

Options (`n_points`, `up_axis`, `normalise`, and per-endpoint ones like `k`, `labels`, `filter`)
come from the form fields or JSON keys, else the query string, so every endpoint takes them the
same way, typed by recon_serve/api/validation.py. Anything a user can get wrong raises a
ShapeError (4xx), never a 500.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from recon_serve.api.protocol import REQUESTS
from recon_serve.api.state import AppState
from recon_serve.api.validation import as_bool, as_choice, as_int, check_text, parse_shape_json
from recon_serve.errors import (BadRequest, EmbeddingUnavailable, InvalidPoints, NonFiniteCoordinates, PayloadTooLarge,
                                 UnsupportedFormat)
from recon_serve.geometry.decode import decode_points_json
from recon_serve.geometry.preprocess import Prepared, prepare

LIST_FIELDS = ("labels",)  # form fields that may repeat; any other repeated field: the last one counts
INLINE_POINTS = 8192  # JSON clouds up to this size (in and out) are prepared on the event loop (a few ms at most)
UNIT_OUTPUTS = ("embedding", "shape_embedding")  # unit length by construction: all zeros means the forward overflowed


@dataclass
class ShapeInput:
    filename: str | None = None
    data: bytes | None = None
    points: object = None
    fields: dict = field(default_factory=dict)  # form fields / JSON keys (as sent: typed by validation.py)
    requests: object = None  # the server's requests in flight, when it says (api/protocol.py)

    @property
    def has_shape(self) -> bool:
        return self.data is not None or self.points is not None

    def get(self, name: str, default=None):
        return self.fields.get(name, default)


async def read_input(request: Request, state: AppState) -> ShapeInput:
    """Parse the body by content type; query parameters fill in options the body does not set."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    query = {check_text(k, "the query string"): check_text(v, "the query string") for k, v in request.query_params.items()}
    requests = (request.scope.get("extensions") or {}).get(REQUESTS)
    if ctype == "multipart/form-data":
        inp = await _read_multipart(request, state, query)
        inp.requests = requests
        return inp
    if ctype == "application/json" or (ctype == "" and not await request.body()):
        body = await request.body()
        payload = parse_shape_json(body) if body else {}
        if not isinstance(payload, dict):
            raise BadRequest("the JSON body must be an object, e.g. {\"points\": [[x, y, z], ...]}")
        return ShapeInput(points=payload.get("points"), fields={**query, **payload}, requests=requests)
    raise UnsupportedFormat(f"content type {ctype or '(none)'!r} is not accepted; send multipart/form-data "
                            f"with a 'file' field, or application/json with 'points'")


async def _read_multipart(request: Request, state: AppState, query: dict) -> ShapeInput:
    limit = state.settings.max_upload_bytes
    form = await request.form(max_files=1, max_fields=1000)
    fields: dict = dict(query)
    upload = None
    for key in set(form.keys()):
        values = form.getlist(key)
        if key == "file":
            upload = values[0]
            continue
        texts = [check_text(v, f"form field {key!r}") for v in values if isinstance(v, str)]
        fields[check_text(key, "a form field name")] = texts if key in LIST_FIELDS else (texts[-1] if texts else None)
    if upload is None:
        return ShapeInput(fields=fields)
    if not isinstance(upload, UploadFile):
        raise BadRequest("the 'file' field must be a file upload")
    data = await upload.read(limit + 1)
    await upload.close()
    if len(data) > limit:
        raise PayloadTooLarge(f"the upload is over the limit of {limit:,} bytes")
    return ShapeInput(filename=upload.filename or "", data=data, fields=fields)


# ------------------------------------------------------------------ the pipeline

async def prepare_input(state: AppState, inp: ShapeInput) -> Prepared:
    """decode -> sample + rotate + normalise, timed per stage; off the event loop in one thread-pool
    call, except for small JSON clouds: a hand-off to a thread costs more than their work, and on a
    loaded host many times more."""
    if not inp.has_shape:
        raise BadRequest("send a shape: a multipart 'file' field, or JSON 'points'")
    backend, m = state.backend, state.metrics
    n = as_int(inp.get("n_points"), "n_points", backend.num_points, backend.min_points, state.settings.max_sample_points)
    up_axis = as_choice(inp.get("up_axis"), "up_axis", "z", ("y", "z"))
    normalise = as_bool(inp.get("normalise"), "normalise", True)
    model_up = (backend.model_card.get("config") or {}).get("up_axis") or "z"  # official checkpoints: y

    def decode_and_prepare() -> Prepared:
        with m.time_stage("decode"):
            if inp.data is not None:
                decoded = state.decoder.decode(inp.filename, inp.data)
            else:
                decoded = decode_points_json(inp.points, state.settings.decode_limits)
        with m.time_stage("sample"):
            return prepare(decoded, n, up_axis, normalise, 0, model_up)

    if inp.data is None and isinstance(inp.points, (list, np.ndarray)) and max(len(inp.points), n) <= INLINE_POINTS:
        return decode_and_prepare()
    return await run_in_threadpool(decode_and_prepare)


async def infer(state: AppState, prepared: Prepared, parts: bool = False, ticket=None,
                alone: bool = False) -> dict[str, np.ndarray]:
    """The model's outputs for one prepared shape (part_logits only with parts=True: the segment
    endpoint); non-finite outputs (coordinates near the float32 limit with normalise=false, say) are
    the user's 422, never a 200 with null numbers. ticket: from Batcher.on_the_way; alone: no other
    request is in the server (see Batcher)."""
    with state.metrics.time_stage("infer"):
        out = await state.batcher.infer(prepared.points, parts, ticket, alone)
    bad = [k for k, v in out.items() if _unusable(k, v)]
    if bad:
        raise NonFiniteCoordinates(f"the model gave non-finite (or all-zero) {', '.join(sorted(bad))} for this shape: "
                                   "its coordinates are too large for the model (send normalise=true, or scale the shape)")
    return out


def _unusable(name: str, v: np.ndarray) -> bool:
    """Non-finite, or a unit output that is all zeros: one numpy call per output (a sum of squares
    for unit vectors, a float64 sum otherwise; inf and NaN propagate), not isfinite + all + any."""
    if name in UNIT_OUTPUTS:
        flat = v.reshape(-1)
        square = float(np.dot(flat, flat))  # a unit vector's components are at most 1: no overflow
        return not (math.isfinite(square) and square > 0)
    return not math.isfinite(float(v.sum(dtype=np.float64)))


async def run_shape(state: AppState, inp: ShapeInput, parts: bool = False) -> tuple[Prepared, dict[str, np.ndarray]]:
    with state.batcher.on_the_way() as ticket:  # batches being collected meanwhile wait for this one
        prepared = await prepare_input(state, inp)
        alone = inp.requests is not None and len(inp.requests) <= 1  # unknown server: always the batcher
        return prepared, await infer(state, prepared, parts, ticket, alone)


def shape_vector(state: AppState, out) -> np.ndarray | None:
    """The shape embedding to store or search with, when the index has a shape field."""
    return unit(out["shape_embedding"]) if "shape" in state.index.fields and "shape_embedding" in out else None


def text_embedding(out) -> np.ndarray:
    """The unit text-aligned embedding of a model's outputs (409 when the model that answered has none)."""
    if "embedding" not in out:
        raise EmbeddingUnavailable("the model that answered has no text-aligned embedding (labels only)")
    return unit(out["embedding"])


def unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0:
        raise InvalidPoints("the model produced a zero or non-finite embedding for this shape")
    return v / norm
