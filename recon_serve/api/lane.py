"""Shape endpoints: one handler each, served by FastAPI and, for JSON bodies, straight from ASGI.

A shape endpoint is `async def handler(state, inp: ShapeInput) -> dict`, registered with
`shape_route`. FastAPI holds the route (its OpenAPI entry, dependencies, status code, multipart
uploads, 405 for other methods). `ShapeLane`, a pure-ASGI layer just inside RequestContext, serves
a POST with a JSON body to such a route itself: the route's own dependencies, the same handler, the
same error shape, the JSON written by orjson. What it skips is FastAPI's routing, dependency
solving and response-model validation: Python work that costs several times its warm price right
after a model call has pushed the interpreter out of the CPU caches, as on every request
(bench/bench_server.py measures the whole request path). Responses still match the route's response model (tests/test_server.py,
test_json_lane_and_uploads_agree, checks each one against an upload served by FastAPI).
"""
from __future__ import annotations

import inspect

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import APIRoute

from recon_serve.api.inputs import read_input
from recon_serve.api.state import AppState, get_state
from recon_serve.errors import ShapeError

JSON = b"application/json"


def shape_route(router: APIRouter, path: str, **route_kwargs):
    """Decorator: register `handler(state, inp)` as POST `path` on `router` (route_kwargs as for
    router.post); the FastAPI endpoint reads the input and calls it, ShapeLane finds it by the
    endpoint's `shape_handler`."""
    def register(handler):
        async def endpoint(request: Request, state: AppState = Depends(get_state)):
            return await handler(state, await read_input(request, state))

        endpoint.__name__, endpoint.__doc__ = handler.__name__, handler.__doc__
        endpoint.shape_handler = handler
        router.post(path, **route_kwargs)(endpoint)
        return handler
    return register


def _content_type(scope) -> bytes:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.split(b";")[0].strip().lower()
    return b""


class ShapeLane:
    """Pure ASGI: JSON POSTs to shape routes go to their handler here, everything else to `app`."""

    def __init__(self, app, api: FastAPI, routers: list[APIRouter]):
        """routers: as `api` includes them (no prefix or dependencies added at include_router)."""
        self.app, self.api = app, api
        self.routes: dict[str, APIRoute] = {}
        for route in (r for router in routers for r in router.routes):
            if isinstance(route, APIRoute) and "POST" in route.methods and hasattr(route.endpoint, "shape_handler"):
                for dep in route.dependencies:  # the lane calls them with the request alone
                    if list(inspect.signature(dep.dependency).parameters) != ["request"]:
                        raise TypeError(f"{route.path}: dependency {dep.dependency.__name__} must take only the request")
                self.routes[route.path] = route

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or _content_type(scope) != JSON:
            return await self.app(scope, receive, send)
        scope["app"], scope["route"] = self.api, route  # what FastAPI would set: request.app, the metrics' route
        request = Request(scope, receive)
        try:
            for dep in route.dependencies:
                await dep.dependency(request)
            state = self.api.state.recon
            body = await route.endpoint.shape_handler(state, await read_input(request, state))
            status = route.status_code or 200
        except ShapeError as err:
            body, status = err.to_dict(), err.status
        data = orjson.dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", JSON), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
