"""The OpenAPI document the service serves at /docs.json: BentoML's, completed so it tells
the truth about every route (tests/service/test_contract.py fuzzes it with schemathesis).

Every error of every route has one body, `ServiceError` (service/errors.py); BentoML
documents its API routes' 400 with `detail` as a string (its validation errors send a
list), and neither it nor FastAPI knows the statuses this service adds: 413 and 415 from
the request guard, 503 when overloaded or still loading, 404 for an unknown model. The V2
routes are served by a bare Starlette app (service/v2_app.py), so FastAPI never sees them:
their operations are written here. Every fix is made to a copy of the generated document.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from service.v2 import BINARY_DTYPES, OUTPUTS
from service.v2_app import INFER_PATHS, METADATA_PATHS, MODEL_READY_PATHS

ERROR = "ServiceError"
ERROR_SCHEMA = {
    "type": "object", "title": ERROR, "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong, and where"},
        "detail": {"description": "more about the error where there is more: for schema errors, one object "
                                  "per problem with its location"},
    },
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}

_TENSOR = {
    "type": "object", "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BYTES", *BINARY_DTYPES]},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "row-major values, flat or nested; omitted when the "
                                                 "parameters give a binary_data_size"},
    },
}
V2_REQUEST = {
    "type": "object", "title": "InferenceRequest", "required": ["inputs"],
    "description": "The Open Inference Protocol's request; the model's metadata (GET /v2/models/{name}) "
                   "lists the inputs it takes. With the binary tensor data extension, send the JSON "
                   "first, then the binary inputs, with the header Inference-Header-Content-Length.",
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "enum": list(OUTPUTS)}, "parameters": {"type": "object"}}}},
    },
}


def _error(description: str, schema: dict[str, Any] | None = None, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": schema or {"$ref": f"#/components/schemas/{ERROR}"}}}}
    if headers:
        response["headers"] = headers
    return response


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "title": name.title()}}
            for name in ("name", "version") if f"{{{name}}}" in path]


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_MODEL_METADATA = {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                   "properties": {"name": {"type": "string"}, "platform": {"type": "string"},
                                  "versions": {"type": "array", "items": {"type": "string"}},
                                  "inputs": {"type": "array", "items": {"type": "object"}},
                                  "outputs": {"type": "array", "items": {"type": "object"}}}}


def v2_operations() -> dict[str, dict[str, Any]]:
    """The V2 routes' operations (service/v2_app.py), before the error statuses contract() adds."""
    paths: dict[str, dict[str, Any]] = {
        "/v2": {"get": {"summary": "V2 Server Metadata", "operationId": "v2_server_metadata", "responses": {
            "200": _json("the server's name, version and extensions", {"type": "object"})}}},
        "/v2/health/live": {"get": {"summary": "V2 Live", "operationId": "v2_live", "responses": {
            "200": _json("the server is live", {"type": "object", "properties": {"live": {"type": "boolean"}}})}}},
        "/v2/health/ready": {"get": {"summary": "V2 Ready", "operationId": "v2_ready", "responses": {
            "200": _json("every model is loaded", {"type": "object", "properties": {"ready": {"type": "boolean"}}}),
            "503": _json("a model is still loading, or failed to load",
                         {"type": "object", "properties": {"ready": {"type": "boolean"}}})}}},
    }
    for path in METADATA_PATHS:
        versioned = "{version}" in path
        paths[path] = {"get": {"summary": "V2 Version Metadata" if versioned else "V2 Model Metadata",
                               "operationId": "v2_version_metadata" if versioned else "v2_model_metadata",
                               "parameters": _path_parameters(path),
                               "responses": {"200": _json("the model's inputs and outputs", _MODEL_METADATA)}}}
    for path in MODEL_READY_PATHS:
        versioned = "{version}" in path
        paths[path] = {"get": {"summary": "V2 Version Ready" if versioned else "V2 Model Ready",
                               "operationId": "v2_version_ready" if versioned else "v2_model_ready",
                               "parameters": _path_parameters(path),
                               "responses": {"200": _json("the model is loaded", {"type": "object"})}}}
    for path in INFER_PATHS:
        versioned = "{version}" in path
        paths[path] = {"post": {
            "summary": "V2 Version Infer" if versioned else "V2 Infer",
            "operationId": "v2_version_infer" if versioned else "v2_infer",
            "parameters": _path_parameters(path),
            "responses": {"200": {"description": "the outputs; with binary outputs requested, the JSON header "
                                                 "then the tensors (Inference-Header-Content-Length)",
                                  "content": {"application/json": {"schema": {"type": "object"}},
                                              "application/octet-stream": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}}},
        }}
    return paths


def contract(generated: dict[str, Any], api_routes: set[str], models: list[str]) -> dict[str, Any]:
    """The generated document with every status each route answers, and its body."""
    document = copy.deepcopy(generated)
    document.setdefault("components", {}).setdefault("schemas", {})[ERROR] = ERROR_SCHEMA
    document["paths"].update(v2_operations())  # a bare Starlette app serves them: not in FastAPI's part
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            responses = operation.setdefault("responses", {})
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "name":
                    parameter["schema"] = {"type": "string", "enum": models, "title": "Name"}
            if path in api_routes:  # BentoML's API routes, behind the request guard
                operation.get("requestBody", {})["required"] = True
                responses["400"] = _error("invalid input: what and where")
                responses["413"] = _error("the body is larger than MAX_BODY_BYTES")
                responses["415"] = _error("the content type is not the one the route takes")
                responses["503"] = _error("overloaded, or the models are still loading", headers=RETRY_AFTER)
            elif path.startswith("/v2/models/"):
                responses.pop("422", None)  # path parameters are strings: FastAPI never sends it
                responses["404"] = _error("unknown model or version")
                responses["503"] = _error("the models are still loading, or overloaded", headers=RETRY_AFTER)
                if method == "post":
                    responses["400"] = _error("the request breaks the protocol or the model's input schema")
                    responses["413"] = _error("the body is larger than MAX_BODY_BYTES")
                    operation["requestBody"] = {"required": True, "content": {
                        "application/json": {"schema": V2_REQUEST},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
            elif path in ("/models", "/models/{name}/drift"):
                responses.pop("422", None)
                responses["503"] = _error("the models are still loading", headers=RETRY_AFTER)
                if "{name}" in path:
                    responses["404"] = _error("unknown model, or monitoring off")
            elif path == "/readyz":
                responses["503"] = _error("not ready: a model is still loading or failed to load")
    return document


class ContractDocument:
    """ASGI middleware that answers GET /docs.json with contract(...) of BentoML's document,
    built once on first request (the arbiter never builds it)."""

    def __init__(self, app: Any, generated: Callable[[], dict[str, Any]], api_routes: list[str],
                 models: list[str]) -> None:
        self.app = app
        self._generated = generated
        self._api_routes = set(api_routes)
        self._models = models
        self._body: bytes | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] != "/docs.json" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if self._body is None:
            self._body = json.dumps(contract(self._generated(), self._api_routes, self._models)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": self._body if scope["method"] == "GET" else b""})
