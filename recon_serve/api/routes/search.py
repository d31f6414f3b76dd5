"""Search the shape index by text (text embeddings, in the text teacher's space) or by a shape (shape
embeddings, pooled from the encoder's geometry; the text field where an index has no shape field)."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from recon_serve.api import schemas
from recon_serve.api.inputs import ShapeInput, run_shape, shape_vector, text_embedding
from recon_serve.api.lane import shape_route
from recon_serve.api.state import AppState, get_state, require_embedding, require_read_key
from recon_serve.api.validation import as_filter, as_int, as_text
from recon_serve.errors import BadRequest, NotFound

router = APIRouter(prefix="/v1/search", responses=schemas.ERROR_RESPONSES, dependencies=[Depends(require_read_key), Depends(require_embedding)])
MAX_K = 1000


async def _search(state: AppState, vector, k: int, filter: dict | None, exclude: str | None = None,
                  version: str | None = None, field: str = "text") -> dict:
    with state.metrics.time_stage("search"):
        hits = await run_in_threadpool(state.index.search, vector, k + (exclude is not None), filter, field)
    hits = [h for h in hits if h.id != exclude][:k]
    return {"hits": [{"id": h.id, "score": h.score, "metadata": h.metadata} for h in hits],
            "model_version": version or state.backend.version}


@router.post("/text", response_model=schemas.SearchResponse)
async def search_text(body: schemas.TextSearchRequest, state: AppState = Depends(get_state)):
    """Shapes nearest to a text query (its teacher embedding) by cosine."""
    with state.metrics.time_stage("text"):
        vector = await run_in_threadpool(state.text.text_vector, body.text)
    return await _search(state, vector, body.k, as_filter(body.filter))


@shape_route(router, "/shape", response_model=schemas.SearchResponse, openapi_extra=schemas.shape_body(
    {"id": {"type": "string", "description": "search with a stored shape instead of an upload"},
     "k": {"type": "integer", "default": 10}, "filter": {"type": "object"}}, json_required=()))
async def search_shape(state: AppState, inp: ShapeInput):
    """Shapes nearest to an uploaded shape, or to a stored one (`id`, which is left out of the hits)."""
    k = as_int(inp.get("k"), "k", 10, 1, MAX_K)
    filter = as_filter(inp.get("filter"))
    shape_id = as_text(inp.get("id"), "id", 512)
    field = "shape" if "shape" in state.index.fields else "text"
    if inp.has_shape:
        _, out = await run_shape(state, inp)
        vector = shape_vector(state, out) if field == "shape" else text_embedding(out)
        if vector is None:
            raise BadRequest("this model gives no shape embedding for the index's shape field; redeploy a model that does")
        return await _search(state, vector, k, filter, version=out.backend.version, field=field)
    if shape_id is None:
        raise BadRequest("send a shape (multipart 'file' or JSON 'points') or the 'id' of a stored shape")
    if state.index.get(shape_id) is None:
        raise NotFound(f"no shape with id {shape_id!r}")
    vector = state.index.embedding(shape_id, field)
    if vector is None:
        raise BadRequest(f"shape {shape_id!r} has no shape embedding yet (added by an older model): "
                         "re-embed it (recon-serve embed --reindex) or search with an upload")
    return await _search(state, vector, k, filter, exclude=shape_id, field=field)
