"""Per-shape inference (classify, segment, zero-shot, embed) and the shape library (add, get, delete)."""
from __future__ import annotations

import numpy as np
import torch
from fastapi import APIRouter, Depends, Response

from recon_serve.api import schemas
from recon_serve.api.inputs import ShapeInput, run_shape, shape_vector, text_embedding, unit
from recon_serve.api.lane import shape_route
from recon_serve.api.state import AppState, get_state, require_api_key, require_embedding, require_read_key
from recon_serve.api.validation import as_int, as_labels, as_metadata, as_text
from recon_serve.calibration import DEFAULT_TEMPERATURE
from recon_serve.errors import NotFound, UnknownLabelSet

router = APIRouter(prefix="/v1", responses=schemas.ERROR_RESPONSES)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


@shape_route(router, "/classify", response_model=schemas.ClassifyResponse, openapi_extra=schemas.shape_body(
    {"k": {"type": "integer", "default": 5, "description": "how many labels"}}))
async def classify(state: AppState, inp: ShapeInput):
    """Top-k class labels with probabilities."""
    names = state.backend.model_card.get("class_names") or []
    k = as_int(inp.get("k"), "k", min(5, max(1, len(names))), 1, max(1, len(names)))
    _, out = await run_shape(state, inp)
    names = out.backend.model_card.get("class_names") or []  # the labels of the model that answered
    if "logits" not in out or not names:
        raise UnknownLabelSet("this model has no classification head or class names; use /v1/zero-shot")
    probs = _softmax(out["logits"].astype(np.float64))
    top = np.argsort(-probs)[:k]
    return {"labels": [{"label": names[i], "probability": float(probs[i])} for i in top],
            "model_version": out.backend.version}


@shape_route(router, "/segment", response_model=schemas.SegmentResponse, openapi_extra=schemas.shape_body(
    {"category": {"type": "string", "description": "use this category's parts (default: the most likely)"}}))
async def segment(state: AppState, inp: ShapeInput):
    """One part label per sampled point, restricted to one category's parts: the one asked for, else the
    classifier's top label when it is a part category, else the category with the most part mass."""
    from recon_serve.evaluate import restrict_to_category

    prepared, out = await run_shape(state, inp, parts=True)
    card = out.backend.model_card
    if "part_logits" not in out:
        raise UnknownLabelSet("this model has no part segmentation head")
    logits = torch.from_numpy(np.asarray(out["part_logits"], dtype=np.float32))
    parts = {str(c): list(p) for c, p in (card.get("category_parts") or {}).items()}
    category = as_text(inp.get("category"), "category", 200)
    if category is not None and category not in parts:
        raise UnknownLabelSet(f"unknown category {category!r}; known: {sorted(parts)}")
    if category is None and parts and "logits" in out:  # the classifier names the category when it is a part category
        from recon_serve.data.vocabulary import canonical

        names = card.get("class_names") or []
        top = names[int(np.argmax(out["logits"]))] if names else None
        category = {canonical(c): c for c in parts}.get(canonical(top)) if top else None
    if parts:
        labels, category = restrict_to_category(logits, parts, category)
    else:
        labels, category = logits.argmax(-1).numpy(), None
    names = card.get("part_names") or [str(i) for i in range(logits.shape[-1])]
    return {"points": prepared.to_input(prepared.points).tolist(), "labels": [int(x) for x in labels],
            "part_names": list(names), "category": category, "model_version": out.backend.version}


@shape_route(router, "/zero-shot", response_model=schemas.ZeroShotResponse, dependencies=[Depends(require_embedding)],
             openapi_extra=schemas.shape_body(
    {"labels": {"type": "array", "items": {"type": "string"}, "example": ["chair", "table", "lamp"]}},
    json_required=("points", "labels")))
async def zero_shot(state: AppState, inp: ShapeInput):
    """Scores for free-text labels: cosine of the text embedding with prompt-ensemble label embeddings;
    probabilities are a softmax over cosine / T, T fitted on validation data (the model card's)."""
    from starlette.concurrency import run_in_threadpool

    labels = as_labels(inp.get("labels"), state.text.max_labels)
    _, out = await run_shape(state, inp)
    with state.metrics.time_stage("text"):
        weights = await run_in_threadpool(state.text.label_weights, tuple(labels))
    sims = weights @ text_embedding(out)
    temperature = out.backend.model_card.get("zero_shot_temperature") or DEFAULT_TEMPERATURE
    probs = _softmax(sims.astype(np.float64) / temperature)
    order = np.argsort(-sims)
    return {"scores": [{"label": labels[i], "similarity": float(sims[i]), "probability": float(probs[i])} for i in order],
            "model_version": out.backend.version}


@shape_route(router, "/embed", response_model=schemas.EmbedResponse, dependencies=[Depends(require_embedding)],
             openapi_extra=schemas.shape_body())
async def embed(state: AppState, inp: ShapeInput):
    """Both embeddings of the shape: `embedding` (text-aligned) and `shape_embedding` (geometry), unit length."""
    _, out = await run_shape(state, inp)
    e = text_embedding(out)
    s = unit(out["shape_embedding"]) if "shape_embedding" in out else None
    return {"embedding": e.tolist(), "dim": int(e.shape[0]), "shape_embedding": None if s is None else s.tolist(),
            "shape_dim": None if s is None else int(s.shape[0]), "model_version": out.backend.version}


def _record(rec) -> dict:
    return {"id": rec.id, "metadata": rec.metadata, "model_version": rec.model_version, "added_at": rec.added_at}


@shape_route(router, "/shapes", status_code=201, response_model=schemas.ShapeRecord,
             dependencies=[Depends(require_api_key), Depends(require_embedding)],
             openapi_extra=schemas.shape_body({"id": {"type": "string"}, "metadata": {"type": "object"}},
                                              json_required=("id", "points")))
async def add_shape(state: AppState, inp: ShapeInput):
    """Embed a shape and store it in the index under `id` (replacing any shape with that id)."""
    from starlette.concurrency import run_in_threadpool

    shape_id = as_text(inp.get("id"), "id", 512, required=True)
    metadata = as_metadata(inp.get("metadata"))
    _, out = await run_shape(state, inp)
    await run_in_threadpool(state.index.add, shape_id, text_embedding(out), metadata, out.backend.version,
                            shape_vector(state, out))
    return _record(state.index.get(shape_id))


@router.get("/shapes/{shape_id:path}", response_model=schemas.ShapeRecord, dependencies=[Depends(require_read_key)])
def get_shape(shape_id: str, state: AppState = Depends(get_state)):
    rec = state.index.get(shape_id)
    if rec is None:
        raise NotFound(f"no shape with id {shape_id!r}")
    return _record(rec)


@router.delete("/shapes/{shape_id:path}", status_code=204, dependencies=[Depends(require_api_key)])
def delete_shape(shape_id: str, state: AppState = Depends(get_state)):
    if not state.index.remove(shape_id):
        raise NotFound(f"no shape with id {shape_id!r}")
    return Response(status_code=204)
