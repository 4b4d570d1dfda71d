"""The OpenAPI document the service serves at /docs.json: BentoML's, completed so it tells
the truth about every route (tests/service/test_contract.py fuzzes it with schemathesis).

Every error of every route has one body, `ServiceError` (service/errors.py); BentoML
documents its API routes' 400 with `detail` as a string (its validation errors send a
list), and neither it nor FastAPI knows the statuses this service adds: 413 and 415 from
the request guard, 503 when overloaded (a batch's latency, or request bodies in flight) or
still loading, 404 for an unknown model. The V2
routes are served by a bare Starlette app, so FastAPI never sees them: their operations
come from service/v2_app.py. Every fix is made to a copy of the generated document.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import bentoml

from service import keys, release, v2_app

ERROR = "ServiceError"
ERROR_SCHEMA = {
    "type": "object", "title": ERROR, "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong, and where"},
        "detail": {"description": "more about the error where there is more: for schema errors, one object "
                                  "per problem with its location"},
    },
}
CHALLENGE = {"WWW-Authenticate": {"description": "Bearer, and why the key was refused", "schema": {"type": "string"}}}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}


def _error(description: str, schema: dict[str, Any] | None = None, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": schema or {"$ref": f"#/components/schemas/{ERROR}"}}}}
    if headers:
        response["headers"] = headers
    return response


DESCRIPTION = (
    "Predictions from every served model: a typed route per model and input form, the Open Inference "
    "Protocol (V2), and each model's metadata, drift and shadow reports. Try the models in a browser at "
    "[/ui](/ui). Every error has one body (ServiceError); with API keys on, send `Authorization: Bearer KEY`."
)
BEARER = "apiKey"
BEARER_SCHEME = {
    "type": "http", "scheme": "bearer",
    "description": "An API key (service/keys.py), when the service runs with API_KEYS_FILE: each operation "
                   "names the scope its key needs in x-required-scope (predict, read or metrics).",
}


def contract(generated: dict[str, Any], api_routes: set[str], models: list[str], build: str,
             keys_on: bool = False) -> dict[str, Any]:
    """The generated document with every status each route answers, and its body; the
    API's version (BentoML says "None" outside a bento) and the build that serves it; with
    API keys on, the key and scope each operation needs, and its 401 and 403."""
    document = copy.deepcopy(generated)
    document["info"] = {"title": "model-serving", "description": DESCRIPTION, "version": release.project_version(),
                        "x-build": build}  # BentoML's: its stock readme, badges from other hosts
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR] = ERROR_SCHEMA
    components.setdefault("securitySchemes", {})[BEARER] = BEARER_SCHEME
    document["paths"].update(v2_app.openapi_paths())  # a bare Starlette app serves them: not in FastAPI's part
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            # BentoML keys some statuses as integers: json.dumps would then write "400" twice,
            # which JSON parsers forgive (the last wins) and Swagger UI's YAML parser refuses.
            responses = operation["responses"] = {str(k): v for k, v in operation.get("responses", {}).items()}
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "name":
                    parameter["schema"] = {"type": "string", "enum": models, "title": "Name"}
            if path in api_routes:  # BentoML's API routes, behind the request guard
                operation.get("requestBody", {})["required"] = True
                responses["400"] = _error("invalid input: what and where")
                responses["413"] = _error("the body is larger than MAX_BODY_BYTES")
                responses["415"] = _error("the content type is not the one the route takes, or the body is "
                                          "compressed (Content-Encoding)")
                responses["503"] = _error("overloaded (a batch, or MAX_BYTES_IN_FLIGHT of bodies), or the models "
                                          "are still loading", headers=RETRY_AFTER)
            elif path.startswith("/v2/models/"):
                responses.pop("422", None)  # path parameters are strings: FastAPI never sends it
                responses["404"] = _error("unknown model or version")
                responses["503"] = _error("the models are still loading, or overloaded", headers=RETRY_AFTER)
                if method == "post":
                    responses["400"] = _error("the request breaks the protocol or the model's input schema")
                    responses["413"] = _error("the body is larger than MAX_BODY_BYTES")
                    responses["415"] = _error("neither JSON nor the binary extension's octet-stream, or a "
                                              "compressed body (Content-Encoding)")
            elif path in ("/models", "/models/{name}/drift", "/models/{name}/shadow"):
                responses.pop("422", None)
                responses["503"] = _error("the models are still loading", headers=RETRY_AFTER)
                if "{name}" in path:
                    responses["404"] = _error("unknown model, or monitoring off" if path.endswith("drift")
                                              else "unknown model, or shadowing off for it")
            elif path == "/readyz":
                responses["503"] = _error("not ready: a model is still loading or failed to load")
            scope = keys.required_scope(path, frozenset(api_routes))
            if keys_on and scope != "open":
                operation["security"] = [{BEARER: []}]
                operation["x-required-scope"] = scope
                responses["401"] = _error("no API key, a malformed Authorization header, or an unknown key",
                                          headers=CHALLENGE)
                if scope != "any":
                    responses["403"] = _error(f"the API key lacks the scope {scope!r}", headers=CHALLENGE)
    return document


class ContractDocument:
    """ASGI middleware that answers GET /docs.json with contract(...) of BentoML's document,
    built once on first request (the arbiter never builds it)."""

    def __init__(self, app: Any, generated: Callable[[], dict[str, Any]], api_routes: list[str],
                 models: list[str]) -> None:
        self.app = app
        # Name the build where BentoML's metrics read it ("not available" outside a bento):
        # the worker builds its middleware after BentoML set the server context and before
        # any request, or the metrics middleware's zero-valued series; there is no other hook.
        context = bentoml.server_context
        context.bento_version = release.build_version(context.bento_version)
        self._generated = generated
        self._api_routes = set(api_routes)
        self._models = models
        self._body: bytes | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] != "/docs.json" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if self._body is None:
            build = bentoml.server_context.bento_version
            self._body = json.dumps(contract(self._generated(), self._api_routes, self._models, build,
                                             keys_on=keys.configured() is not None)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": self._body if scope["method"] == "GET" else b""})
