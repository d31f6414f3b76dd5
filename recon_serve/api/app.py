"""The FastAPI app: routers composed here, lifespan owning backend + index + decoder, one error shape.

Every error body is {"error": code, "detail": message}: ShapeError subclasses map to their status,
request validation to 422 `invalid_request`, unknown routes to 404, and anything unexpected to a 500
`internal_error` whose detail names the request id also written to the log.
"""
from __future__ import annotations

import contextvars
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from recon_serve.api.routes import admin, health, search, shapes
from recon_serve.api.state import AppState
from recon_serve.errors import PayloadTooLarge, ShapeError
from recon_serve.settings import Settings

log = logging.getLogger("recon_serve.api")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_BODY_SLACK = 1 << 20  # multipart headers and form fields on top of the file itself
STATIC_DIR = Path(__file__).resolve().parent / "static"  # the web viewer, built from web/ (npm run build)


class RequestIdFilter(logging.Filter):
    """Adds %(request_id)s to log records (install on a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class BodyLimit:
    """Refuse bodies over the limit before reading them (Content-Length) or while reading (chunked)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            err = PayloadTooLarge(f"the request body is {int(length):,} bytes; the limit is {self.limit:,}")
            return await JSONResponse(err.to_dict(), status_code=err.status)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLarge(f"the request body is over the limit of {self.limit:,} bytes")
            return message

        return await self.app(scope, counted, send)


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ShapeError)
    async def shape_error(request: Request, exc: ShapeError):
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return _error(exc.status_code, code, str(exc.detail))


def _install_request_context(app: FastAPI) -> None:
    @app.middleware("http")
    async def context(request: Request, call_next):
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except ShapeError as exc:  # raised while streaming the body (BodyLimit)
            response = JSONResponse(exc.to_dict(), status_code=exc.status)
        except Exception:
            log.exception("internal error on %s %s", request.method, request.url.path)
            response = _error(500, "internal_error", f"internal error; request id {rid}")
        route = getattr(request.scope.get("route"), "path", "unmatched")
        seconds = time.perf_counter() - t0
        metrics = request.app.state.recon.metrics
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(seconds)
        log.info("%s %s -> %d in %.1f ms", request.method, request.url.path, response.status_code, seconds * 1000)
        request_id.reset(token)
        response.headers["X-Request-ID"] = rid
        return response


def _install_static(app: FastAPI) -> None:
    """The web viewer: GET / is its page, /static/* its bundle and stylesheet."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    def viewer():
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            return _error(404, "not_found", "the web viewer is not built (cd web && npm ci && npm run build)")
        return FileResponse(index, media_type="text/html")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for `settings` (default: from the environment); the model loads at startup."""
    settings = settings or Settings.from_env()
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(state.open)
        log.info("ready: model %s on %s, index %s (%d shapes)", state.backend.version, state.backend.name,
                 settings.index_dir, len(state.index))
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="recon-serve", version="1", lifespan=lifespan,
                  description="Classify, segment, embed and search 3D shapes with a ReCon point-cloud model.")
    app.state.recon = state
    for module in (shapes, search, health, admin):
        app.include_router(module.router)
    _install_static(app)
    _install_error_handlers(app)
    _install_request_context(app)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + _BODY_SLACK)
    return app
