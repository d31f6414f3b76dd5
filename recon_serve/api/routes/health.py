"""Liveness, readiness (with stale-embedding counts), Prometheus metrics and the model card."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from recon_serve.api import schemas
from recon_serve.api.state import AppState, get_state

router = APIRouter()


@router.get("/healthz", response_model=schemas.Health)
async def healthz():
    """The process answers (no dependencies checked)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=schemas.Ready, responses={503: {"model": schemas.Ready}})
def readyz(state: AppState = Depends(get_state)):
    """Model loaded and index open; lists embeddings made by another model version (re-embed them)."""
    loaded, open_ = state.backend is not None, state.index is not None
    version = state.backend.version if loaded else None
    versions = state.index.model_versions() if open_ else {}
    body = {"ready": loaded and open_, "model_loaded": loaded, "index_open": open_, "model_version": version,
            "index_size": len(state.index) if open_ else 0,
            "stale_embeddings": {str(v): n for v, n in versions.items() if v != version}}
    stale = sum(body["stale_embeddings"].values())
    if stale:  # e.g. after a deploy: searches mix two embedding spaces until the index is rebuilt
        body["detail"] = (f"{stale} indexed shapes were embedded by another model version; rebuild with "
                          f"`recon-serve embed --reindex --index {state.settings.index_dir}`")
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(state: AppState = Depends(get_state)):
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
def models(state: AppState = Depends(get_state)) -> dict:
    """The loaded model's card: labels, part names, points, embedding size, version, backend. The
    checkpoint is named by its file name only: the server's directory layout is nobody's business."""
    card = dict(state.backend.model_card)
    src = card.get("source_checkpoint")
    if isinstance(src, dict) and src.get("path"):
        card["source_checkpoint"] = {**src, "path": Path(str(src["path"])).name}
    return {**card, "model_version": state.backend.version, "backend": state.backend.name}
