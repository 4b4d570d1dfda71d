"""The V2 infer routes, as a bare Starlette app mounted ahead of the metadata app.

Served through the FastAPI metadata app, a V2 call crossed a second middleware stack
(error, telemetry, body-limit and exit-stack middlewares), FastAPI's router and its
dependency solving: about a quarter of the route's CPU at concurrency 1 (py-spy). Here the
route is a plain ASGI endpoint in a Starlette app that BentoML mounts passively (it only
takes the requests its routes match): a Request, service/v2.py's parsing, the model's
batcher, one Response. The document at /docs.json describes these routes
(service/openapi.py), as FastAPI no longer sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import v2
from service.batching import ModelBatcher, Overloaded

INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")

Resolver = Callable[[str, "str | None"], ModelBatcher]
"""(model name, version or None) -> its batcher; raises v2.ProtocolError (404, 503)."""


class V2Infer:
    """ASGI endpoint of POST /v2/models/{name}[/versions/{version}]/infer."""

    def __init__(self) -> None:
        self._resolve: Resolver | None = None

    def serve(self, resolve: Resolver) -> None:
        """Called by the service instance once it exists (the app is built with its class)."""
        self._resolve = resolve

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        parameters = scope["path_params"]
        response = await self.answer(parameters["name"], parameters.get("version"), Request(scope, receive))
        await response(scope, receive, send)

    async def answer(self, name: str, version: str | None, request: Request) -> Response:
        try:
            if self._resolve is None:
                raise v2.ProtocolError(503, "the service is starting")
            batcher = self._resolve(name, version)
            body = await v2.read_request(request)
            spec = batcher.model.spec
            outputs = v2.requested_outputs(body) if isinstance(body, dict) else []
            _, rows = v2.rows_from_request(spec, body)
            probabilities = await batcher.predict(rows)
            content, header_length = v2.response(spec, batcher.model.tag.split(":")[1], body, probabilities, outputs)
            if header_length is None:
                return Response(content, media_type="application/json")
            return Response(content, media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(header_length)})
        except v2.ProtocolError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except Overloaded as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})


def infer_app(endpoint: V2Infer) -> Any:
    """The Starlette app holding the infer routes (POST only: other methods get a JSON 405)."""
    return Starlette(routes=[Route(path, endpoint, methods=["POST"]) for path in INFER_PATHS],
                     exception_handlers={HTTPException: _json_error})


async def _json_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
