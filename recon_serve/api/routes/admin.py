"""Model management: switch to the repository's live version (after `recon-serve deploy` or `rollback`)."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from recon_serve.api import schemas
from recon_serve.api.state import AppState, get_state, require_api_key

router = APIRouter(prefix="/v1/admin", responses={401: {"model": schemas.ErrorBody}, 409: {"model": schemas.ErrorBody}}, dependencies=[Depends(require_api_key)])


@router.post("/reload")
async def reload(state: AppState = Depends(get_state)) -> dict:
    """Load the live version beside the current one, check it, swap it in, release the old one.

    Requests in flight finish on the model that took them; none fail. 409 `reload_failed` (old model
    still serving) when the new one does not load or gives bad outputs.
    """
    return await run_in_threadpool(state.reload)
