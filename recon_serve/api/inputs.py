"""A shape request, read once: multipart (`file` + form fields) or JSON (`points` + keys), then the
straight line decode -> sample/normalise (`prepare`) -> batched inference.

Options (`n_points`, `up_axis`, `normalise`, and per-endpoint ones like `k`, `labels`, `filter`)
come from the form fields or JSON keys, else the query string, so every endpoint takes them the
same way. Anything a user can get wrong raises a ShapeError (4xx), never a 500.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from recon_serve.api.state import AppState
from recon_serve.errors import BadRequest, InvalidPoints, PayloadTooLarge, UnsupportedFormat
from recon_serve.geometry.decode import decode_points_json
from recon_serve.geometry.preprocess import Prepared, prepare

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass
class ShapeInput:
    filename: str | None = None
    data: bytes | None = None
    points: object = None
    fields: dict = field(default_factory=dict)  # form fields / JSON keys, lists for repeated form fields

    @property
    def has_shape(self) -> bool:
        return self.data is not None or self.points is not None

    def get(self, name: str, default=None):
        value = self.fields.get(name, default)
        return value[-1] if isinstance(value, list) and name not in ("labels", "points", "filter") else value


async def read_input(request: Request, state: AppState) -> ShapeInput:
    """Parse the body by content type; query parameters fill in options the body does not set."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    query = dict(request.query_params)
    if ctype == "multipart/form-data":
        return await _read_multipart(request, state, query)
    if ctype == "application/json" or (ctype == "" and not await request.body()):
        body = await request.body()
        try:
            payload = json.loads(body) if body else {}
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None
        if not isinstance(payload, dict):
            raise BadRequest("the JSON body must be an object, e.g. {\"points\": [[x, y, z], ...]}")
        return ShapeInput(points=payload.get("points"), fields={**query, **payload})
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
        texts = [v for v in values if isinstance(v, str)]
        fields[key] = texts if len(texts) > 1 or key == "labels" else (texts[0] if texts else None)
    if upload is None:
        return ShapeInput(fields=fields)
    if not isinstance(upload, UploadFile):
        raise BadRequest("the 'file' field must be a file upload")
    data = await upload.read(limit + 1)
    await upload.close()
    if len(data) > limit:
        raise PayloadTooLarge(f"the upload is over the limit of {limit:,} bytes")
    return ShapeInput(filename=upload.filename or "", data=data, fields=fields)


# ------------------------------------------------------------------ option parsing

def as_int(value, name: str, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be an integer, not {value!r}") from None
    if isinstance(value, bool) or not lo <= n <= hi:
        raise BadRequest(f"{name} must lie in [{lo}, {hi}], not {value!r}")
    return n


def as_bool(value, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise BadRequest(f"{name} must be true or false, not {value!r}")


def as_json_object(value, name: str) -> dict | None:
    """A dict from JSON, or from a JSON string (form fields)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise BadRequest(f"{name} must be a JSON object: {e}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be a JSON object")
    return value


# ------------------------------------------------------------------ the pipeline

async def prepare_input(state: AppState, inp: ShapeInput) -> Prepared:
    """decode -> sample + rotate + normalise, timed per stage; the heavy parts off the event loop."""
    if not inp.has_shape:
        raise BadRequest("send a shape: a multipart 'file' field, or JSON 'points'")
    backend, m = state.backend, state.metrics
    n = as_int(inp.get("n_points"), "n_points", backend.num_points, backend.min_points, state.settings.max_sample_points)
    up_axis = str(inp.get("up_axis") or "z").lower()
    normalise = as_bool(inp.get("normalise"), "normalise", True)
    with m.time_stage("decode"):
        if inp.data is not None:
            decoded = await run_in_threadpool(state.decoder.decode, inp.filename, inp.data)
        else:
            decoded = await run_in_threadpool(decode_points_json, inp.points, state.settings.decode_limits)
    with m.time_stage("sample"):
        return await run_in_threadpool(prepare, decoded, n, up_axis, normalise)


async def infer(state: AppState, prepared: Prepared) -> dict[str, np.ndarray]:
    with state.metrics.time_stage("infer"):
        return await state.batcher.infer(prepared.points)


async def run_shape(state: AppState, inp: ShapeInput) -> tuple[Prepared, dict[str, np.ndarray]]:
    prepared = await prepare_input(state, inp)
    return prepared, await infer(state, prepared)


def shape_vector(state: AppState, out) -> np.ndarray | None:
    """The shape embedding to store or search with, when the index has a shape field."""
    return unit(out["shape_embedding"]) if "shape" in state.index.fields and "shape_embedding" in out else None


def unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0:
        raise InvalidPoints("the model produced a zero or non-finite embedding for this shape")
    return v / norm
