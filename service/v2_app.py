"""The Open Inference Protocol (KServe V2) surface: infer, model metadata, health.

A bare Starlette app that BentoML mounts passively ahead of the metadata app (it takes
only the requests its routes match). Served through a FastAPI app, a V2 call crossed a
second middleware stack (error, telemetry, body-limit and exit-stack middlewares),
FastAPI's router and its dependency solving: about a quarter of the infer route's CPU at
concurrency 1 (py-spy). Here a route is a Request, service/v2.py's parsing, the model's
batcher and one Response. The routes find the models through BentoML's current service
instance (`bentoml.get_current_service()`), so nothing is wired at import. FastAPI never
sees these routes, so their OpenAPI operations are written here too (`openapi_paths`, at
the end), and /docs.json includes them (service/openapi.py). The tensors themselves: v2.py.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import tracing, v2
from service.errors import NotReady, exception_handlers
from service.loading import ServedModels
from service.runtime import V2_PLATFORMS, ServedModel

try:
    SERVICE_VERSION = version("bento-model-serving")
except PackageNotFoundError:  # running from a bento, not an installed checkout
    SERVICE_VERSION = "0.1.0"

INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
METADATA_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
MODEL_READY_PATHS = ("/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready")
SERVER_PATHS = ("/v2", "/v2/health/live", "/v2/health/ready")
PATHS = (*SERVER_PATHS, *METADATA_PATHS, *MODEL_READY_PATHS, *INFER_PATHS)
"""Every V2 route (service/openapi.py documents them)."""


def served_models() -> ServedModels:
    try:
        return bentoml.get_current_service().models
    except bentoml.exceptions.BentoMLException:
        raise NotReady("the service is starting") from None


async def infer(request: Request) -> Response:
    parameters = request.path_params
    batcher = served_models().batcher(parameters["name"], parameters.get("version"))
    body = await v2.read_request(request)
    spec = batcher.model.spec
    outputs = v2.requested_outputs(body) if isinstance(body, dict) else []
    tracing.request_read(spec.name)
    with tracing.span("preprocess", model=spec.name):
        _, rows = await v2.rows_from_request(spec, body)
    probabilities = await batcher.predict(rows)
    content, header_length = v2.response(spec, batcher.model.version, body, probabilities, outputs)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


async def model_metadata(request: Request) -> Response:
    parameters = request.path_params
    return JSONResponse(metadata(served_models().batcher(parameters["name"], parameters.get("version")).model))


async def model_ready(request: Request) -> Response:
    parameters = request.path_params
    served_models().batcher(parameters["name"], parameters.get("version"))
    return JSONResponse({"name": parameters["name"], "ready": True})


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "model-serving", "version": SERVICE_VERSION, "extensions": []})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    try:
        is_ready = served_models().ready
    except NotReady:
        is_ready = False
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


def metadata(model: ServedModel) -> dict[str, Any]:
    probability_type = "FP32" if model.framework == "litert" else "FP64"
    return {
        "name": model.spec.name,
        "versions": [model.version],
        "platform": V2_PLATFORMS[model.framework],
        "inputs": [t.as_json() for t in v2.input_tensors(model.spec)],
        "outputs": [t.as_json() for t in v2.output_tensors(model.spec, probability_type)],
    }


def v2_app() -> Starlette:
    """The app of every V2 route; other methods on them get a 405 in the service's error body."""
    routes = [Route(path, infer, methods=["POST"]) for path in INFER_PATHS]
    routes += [Route(path, model_metadata, methods=["GET"]) for path in METADATA_PATHS]
    routes += [Route(path, model_ready, methods=["GET"]) for path in MODEL_READY_PATHS]
    routes += [Route("/v2", server_metadata, methods=["GET"]), Route("/v2/health/live", live, methods=["GET"]),
               Route("/v2/health/ready", ready, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers=exception_handlers())


# --- the OpenAPI description of the routes above -------------------------------------------

_TENSOR = {
    "type": "object", "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BYTES", *v2.BINARY_DTYPES]},
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
            "properties": {"name": {"type": "string", "enum": list(v2.OUTPUTS)}, "parameters": {"type": "object"}}}},
    },
}


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


def openapi_paths() -> dict[str, dict[str, Any]]:
    """The OpenAPI operations of these routes; service/openapi.py adds their error statuses."""
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
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": V2_REQUEST},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {"200": {"description": "the outputs; with binary outputs requested, the JSON header "
                                                 "then the tensors (Inference-Header-Content-Length)",
                                  "content": {"application/json": {"schema": {"type": "object"}},
                                              "application/octet-stream": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}}},
        }}
    return paths
