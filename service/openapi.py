"""The OpenAPI document the service serves at /docs.json: BentoML's, completed so it tells
the truth about every route (tests/service/test_contract.py fuzzes it with schemathesis).

BentoML documents its API routes' 400 body with `detail` as a string (its validation
errors send a list), and neither it nor FastAPI knows the statuses this service adds: 413
and 415 from the request guard, 503 when overloaded or still loading, the V2 routes' 400,
404 and 503 with their `{"error": ...}` body, or the V2 request body (read by hand, so
FastAPI sees no schema). Every fix is made here, to a copy of the generated document, which
also gains the V2 infer routes: a bare Starlette app serves them (service/v2_infer.py).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from service.v2 import BINARY_DTYPES, OUTPUTS
from service.v2_infer import INFER_PATHS

ERROR = "ServiceError"
ERROR_SCHEMA = {
    "type": "object", "title": ERROR, "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong, and where"},
        "detail": {"description": "schema errors: one object per problem, with its location",
                   "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
    },
}
FASTAPI_ERROR = {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}
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


def _v2_infer_operation(path: str) -> dict[str, Any]:
    """The V2 infer operation before the fixes below (which add its body and error statuses)."""
    versioned = "{version}" in path
    parameters = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string", "title": "Name"}}]
    if versioned:
        parameters.append({"name": "version", "in": "path", "required": True,
                           "schema": {"type": "string", "title": "Version"}})
    return {
        "summary": "V2 Version Infer" if versioned else "V2 Infer",
        "operationId": "v2_version_infer" if versioned else "v2_infer",
        "parameters": parameters,
        "responses": {"200": {"description": "the outputs; with binary outputs requested, the JSON header "
                                             "then the tensors (Inference-Header-Content-Length)",
                              "content": {"application/json": {"schema": {"type": "object"}},
                                          "application/octet-stream": {"schema": {"type": "string",
                                                                                  "format": "binary"}}}}},
    }


def contract(generated: dict[str, Any], api_routes: set[str], models: list[str]) -> dict[str, Any]:
    """The generated document with every status each route answers, and its body."""
    document = copy.deepcopy(generated)
    document.setdefault("components", {}).setdefault("schemas", {})[ERROR] = ERROR_SCHEMA
    for path in INFER_PATHS:  # served by a bare Starlette app (service/v2_infer.py): not in FastAPI's part
        document["paths"].setdefault(path, {"post": _v2_infer_operation(path)})
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
                responses["503"] = _error("the models are still loading", FASTAPI_ERROR)
                if "{name}" in path:
                    responses["404"] = _error("unknown model, or monitoring off", {"anyOf": [
                        FASTAPI_ERROR, {"$ref": f"#/components/schemas/{ERROR}"}]})  # the latter: no route
            elif path in ("/readyz", "/v2/health/ready"):
                responses["503"] = {"description": "not ready: a model is still loading or failed to load"}
    return document


class ContractDocument:
    """ASGI middleware that answers GET /docs.json with contract(...) of BentoML's document,
    built once on first request (the arbiter never builds it)."""

    def __init__(self, app: Any, generated: Callable[[], dict[str, Any]], api_routes: tuple[str, ...],
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
