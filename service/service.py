"""The BentoML service: every model of the spec registry (service/specs.py), one adaptive
batcher each, behind typed routes, the Open Inference Protocol and the metadata routes.

This class holds routes only. What they stand on lives in a module of its own:
- typed routes, made from each spec: service/routes.py (why generated: its docstring);
- loading, readiness and the model references `bentoml build` packages: service/loading.py;
- the V2 surface (infer, metadata, health): service/v2_app.py, mounted below;
- worker metrics: service/instruments.py; errors and their one body: service/errors.py;
- the request guard, the OpenAPI document, fixes to library internals: service/guard.py,
  service/openapi.py, service/patches.py.

Importing this module defines the class; the one call with an effect beyond that is
`patches.apply()`, which BentoML needs before its worker builds the server.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
from fastapi import FastAPI

from service import keys, logs, patches, tracing
from service.drift import DriftReport
from service.errors import JsonErrors, exception_handlers
from service.guard import RequestGuard
from service.instruments import Instruments
from service.keys import api_keys
from service.loading import ServedModels, add_model_refs
from service.openapi import ContractDocument
from service.pages import add_pages
from service.preprocessing import quiet_image_warnings
from service.routes import ROUTES, add_typed_routes, endpoints
from service.runtime import ServedModel
from service.schemas import FeatureInfo, ImageInfo, ModelInfo, ModelsResponse, Prediction, Predictions
from service.shadow import ShadowReport
from service.specs import SPECS
from service.v2_app import v2_app

MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", 16 * 1024 * 1024))
"""Requests with a larger body are refused with 413 before they are parsed."""
MAX_BYTES_IN_FLIGHT = int(os.environ.get("MAX_BYTES_IN_FLIGHT", 128 * 1024 * 1024))
"""Bodies being read or served together; beyond it, 503 + Retry-After (service/guard.py)."""

RUNTIME_IMAGE = bentoml.images.Image(base_image="python:3.11-slim", python_version="3.11", distro="none")
"""The container's base: BentoML's usual python:3.11-slim, as it is. For a known distro
BentoML's recipe first runs `apt-get install build-essential git gnupg2` (632 MB of the
image, measured); every package here installs from a wheel, so no distro recipe. The
packages are pinned in serving-requirements.txt; docker/containerize.sh swaps the base offline."""

patches.apply()  # before the server builds its middleware stack and uvicorn's config

info_app = FastAPI(title="model metadata", exception_handlers=exception_handlers(),
                   docs_url=None, redoc_url=None, openapi_url=None)  # FastAPI's pages load from a CDN
add_pages(info_app)  # /ui and / (service/pages.py)


def serving_every_spec(service_class: type) -> type:
    """The class with a model reference and the typed routes of every spec: before
    @bentoml.service, which collects both from the class."""
    add_model_refs(service_class)
    add_typed_routes(service_class, service_class.predict)  # type: ignore[attr-defined]
    return service_class


@bentoml.asgi_app(info_app, path="/")
@bentoml.asgi_app(v2_app(), path="/")  # mounted first: it takes only the V2 routes
@bentoml.service(
    name="model-serving",
    image=RUNTIME_IMAGE,
    workers=1,
    traffic={"timeout": 30, "max_concurrency": 512},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": [".*"]},
)
@serving_every_spec
class ModelServing:
    """Every model of service/specs.py, from the BentoML model store."""

    def __init__(self) -> None:
        logs.install()
        quiet_image_warnings()
        self.instruments = Instruments()
        self.instruments.gc_pauses.start()
        self.models = ServedModels(self, self.instruments)
        self.models.start_loading()  # in the background: /livez answers at once

    @bentoml.on_deployment
    def check_settings() -> None:
        """Once, in `bentoml serve` before any worker: a keys file that cannot be used (or
        none, with REQUIRE_API_KEYS=1), or OTEL_* settings the service cannot honour, stop
        the server with the reason (service/keys.py, service/tracing.py)."""
        keys.check_at_start()
        tracing.check_at_start()

    def __is_ready__(self) -> bool:
        return self.models.ready

    async def predict(self, name: str, rows: Any) -> Predictions:
        """The typed routes' one model call: rows through the model's batcher, then labelled."""
        batcher = self.models.batcher(name)
        return label(batcher.model, await batcher.predict(rows))

    @info_app.get("/models", response_model=ModelsResponse)
    def list_models(self) -> ModelsResponse:
        """The served models: tags, metrics, MLflow run ids and input schemas."""
        shadows = self.models.shadow_tags()
        return ModelsResponse(models=[model_info(batcher.model, shadows.get(batcher.model.spec.name))
                                      for batcher in self.models.all()])

    @info_app.get("/models/{name}/drift", response_model=DriftReport)
    def model_drift(self, name: str) -> DriftReport:
        """Recent inputs and predictions of a model compared with its training data (PSI per feature)."""
        return self.models.drift(name).report()

    @info_app.get("/models/{name}/shadow", response_model=ShadowReport)
    def model_shadow(self, name: str) -> ShadowReport:
        """How the challenger (NAME_SHADOW_VERSION) answers the sampled requests next to the champion."""
        return self.models.shadow(name).report()



# Outermost first. Each factory returns the app itself when its feature is off.
ModelServing.add_asgi_middleware(tracing.traced)  # type: ignore[attr-defined]
ModelServing.add_asgi_middleware(JsonErrors)  # type: ignore[attr-defined]
ModelServing.add_asgi_middleware(api_keys, typed_routes=[route.path for route in ROUTES])  # type: ignore[attr-defined]
ModelServing.add_asgi_middleware(  # type: ignore[attr-defined]
    ContractDocument, generated=lambda: ModelServing.openapi_spec.asdict(),  # type: ignore[attr-defined]
    api_routes=[route.path for route in ROUTES], models=list(SPECS),
)
ModelServing.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard, max_body_bytes=MAX_BODY_BYTES, max_bytes_in_flight=MAX_BYTES_IN_FLIGHT,
    content_types={route.path: route.media_type for route in ROUTES},
)


def label(model: ServedModel, probabilities: np.ndarray) -> Predictions:
    names = model.spec.class_names
    return Predictions(predictions=[
        Prediction(label=names[int(row.argmax())],
                   probabilities={n: float(p) for n, p in zip(names, row, strict=True)}, model=model.tag)
        for row in probabilities
    ])


def model_info(model: ServedModel, shadow: str | None = None) -> ModelInfo:
    spec, meta = model.spec, model.metadata
    return ModelInfo(
        name=spec.name, tag=model.tag, task=spec.task, endpoints=endpoints(spec.name),
        class_names=list(spec.class_names), metrics=meta["metrics"],
        extra_metrics={k.removesuffix("_metrics"): v for k, v in meta.items()
                       if k.endswith("_metrics") and isinstance(v, dict)},
        mlflow_run_id=meta["mlflow_run_id"], trained_at=meta["trained_at"], quick=meta["quick"],
        max_batch_size=spec.batching.max_batch_size, max_latency_ms=spec.batching.max_latency_ms,
        features=[FeatureInfo(**f) for f in spec.schema()["features"]],
        image=ImageInfo(**spec.schema()["image"]) if spec.image else None,
        role=model.role, shadow=shadow,
    )
