"""The FastAPI app: routers composed here, lifespan owning backend + index + decoder, one error shape.

Every error body is {"error": code, "detail": message}: ShapeError subclasses map to their status,
request validation to 422 `invalid_request`, unknown routes to 404, and anything unexpected to a 500
`internal_error` whose detail names the request id also written to the log. Every response carries
X-Request-ID and nosniff, the viewer a CSP; BodyGuard bounds bodies (size, time, origin) before the app;
ShapeLane serves JSON shape requests without FastAPI's routing (recon_serve/api/lane.py).
"""
from __future__ import annotations

import asyncio
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

from recon_serve.api.lane import ShapeLane
from recon_serve.api.routes import admin, health, search, shapes
from recon_serve.api.state import AppState
from recon_serve.errors import ForbiddenOrigin, PayloadTooLarge, RequestTimeout, ShapeError
from recon_serve.model.text import TowerMismatch
from recon_serve.settings import Settings

log = logging.getLogger("recon_serve.api")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_BODY_SLACK = 1 << 20
REFUSED = "recon.body_refused"  # scope key: BodyGuard has answered this request itself  # multipart headers and form fields on top of the file itself
STATIC_DIR = Path(__file__).resolve().parent / "static"  # the web viewer, built from web/ (npm run build)


class RequestIdFilter(logging.Filter):
    """Adds %(request_id)s to log records (install on a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class BodyGuard:
    """Pure ASGI, outermost: bounds every request's body and answers before the app runs where it can.

    - size: refused before reading when Content-Length says so, or while reading (chunked bodies);
    - time: the whole body must arrive within `timeout_s` (a trickling client gets 408);
    - origin: a POST/PUT/PATCH/DELETE carrying an Origin header that is neither this server nor one of
      `allowed_origins` gets 403, so a page elsewhere cannot use a keyless server from a browser.
    Errors raised while the app reads the body come back as the JSON error shape, never a 500."""

    WRITES = {"POST", "PUT", "PATCH", "DELETE"}

    def __init__(self, app, limit: int, timeout_s: float, allowed_origins=()):
        self.app, self.limit, self.timeout_s = app, limit, timeout_s
        self.allowed_origins = {o.rstrip("/") for o in allowed_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        try:
            self._check_origin(scope, headers)
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit:
                raise PayloadTooLarge(f"the request body is {int(length):,} bytes; the limit is {self.limit:,}")
        except ShapeError as err:
            return await JSONResponse(err.to_dict(), status_code=err.status)(scope, receive, send)
        seen, done = 0, False
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        started = answered = False

        async def refuse(err: ShapeError) -> dict:
            # answer here and tell the app the client left: an exception raised into the app would
            # cross BaseHTTPMiddleware's task groups and come out as a 500
            nonlocal answered
            scope[REFUSED] = err
            if not started:
                await JSONResponse(err.to_dict(), status_code=err.status)(scope, receive, tracked_send)
                answered = True
            return {"type": "http.disconnect"}

        async def guarded():
            nonlocal seen, done
            if REFUSED in scope:
                return {"type": "http.disconnect"}
            if done:  # body complete: later receives wait for the disconnect, untimed
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(left, 0.001)):  # wait_for would wrap receive() in a task
                    message = await receive()
            except TimeoutError:
                return await refuse(RequestTimeout(f"the request body did not arrive within {self.timeout_s:g} s"))
            seen += len(message.get("body", b""))
            done = message["type"] != "http.request" or not message.get("more_body", False)
            if seen > self.limit:
                return await refuse(PayloadTooLarge(f"the request body is over the limit of {self.limit:,} bytes"))
            return message

        async def tracked_send(message):
            nonlocal started
            if answered:
                return  # the app's own answer after the guard's: dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, guarded, tracked_send)

    def _check_origin(self, scope, headers) -> None:
        origin = headers.get(b"origin")
        if origin is None or scope["method"] not in self.WRITES:
            return
        origin = origin.decode("latin-1").rstrip("/")
        own = {f"{scheme}://{headers.get(b'host', b'').decode('latin-1')}" for scheme in ("http", "https")}
        if origin not in own and origin not in self.allowed_origins:
            raise ForbiddenOrigin(f"requests from the web origin {origin!r} are not allowed here; "
                                  "the server's operator can allow it with RECON_CORS_ORIGINS")


# the viewer's page and bundle may load only their own files
VIEWER_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
              "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


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


class RequestContext:
    """Pure ASGI (a BaseHTTPMiddleware costs a task group and memory streams per request): the request
    id for the log, request metrics, the common response headers, and a JSON 500 naming the request id
    for anything unexpected (or BodyGuard's own answer when it refused the body and the app gave up)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        rid = given or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        path, t0, status = scope["path"], time.perf_counter(), None
        extra = [(b"x-request-id", rid.encode("latin-1")), (b"x-content-type-options", b"nosniff")]
        if path == "/" or path.startswith("/static/"):
            extra.append((b"content-security-policy", VIEWER_CSP.encode()))

        async def send_with_headers(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            refused = scope.get(REFUSED)
            if refused is not None:  # BodyGuard answered already (this copy is dropped); the app gave up
                response = JSONResponse(refused.to_dict(), status_code=refused.status)
            else:
                log.exception("internal error on %s %s", scope["method"], path)
                response = _error(500, "internal_error", f"internal error; request id {rid}")
            if status is None:
                await response(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - t0
            code = str(status or 500)
            self.metrics.requests.labels(scope["method"], route, code).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info("%s %s -> %s in %.1f ms", scope["method"], path, code, seconds * 1000)
            request_id.reset(token)


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

        try:
            await run_in_threadpool(state.open)
        except TowerMismatch as e:  # a set-up mistake: say first what to set
            log.error("not starting: %s", e)
            raise
        log.info("ready: model %s on %s, index %s (%d shapes)", state.backend.version, state.backend.name,
                 settings.index_dir, len(state.index))
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="recon-serve", version="1", lifespan=lifespan,
                  description="Classify, segment, embed and search 3D shapes with a ReCon point-cloud model.")
    app.state.recon = state
    routers = [module.router for module in (shapes, search, health, admin)]
    for router in routers:
        app.include_router(router)
    _install_static(app)
    _install_error_handlers(app)
    app.add_middleware(ShapeLane, api=app, routers=routers)  # innermost: JSON shape requests skip FastAPI's routing (lane.py)
    app.add_middleware(RequestContext, metrics=state.metrics)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["content-type", "x-api-key", "x-request-id"], expose_headers=["x-request-id"])
    app.add_middleware(BodyGuard, limit=settings.max_upload_bytes + _BODY_SLACK, timeout_s=settings.body_timeout_s,
                       allowed_origins=settings.cors_origins)
    return app
