"""The BentoML service: typed endpoints for the four models, one adaptive batcher each.

Endpoints stay thin: validate (pydantic, from the specs) -> preprocess (outside the
model's critical section) -> the model's batcher -> label the probabilities.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from fastapi import FastAPI, HTTPException
from starlette.responses import JSONResponse

from service import v2
from service.batching import ModelBatcher
from service.connections import guard_connections
from service.drift import DriftGauges, DriftMonitor, DriftReport, Profile, configured_window
from service.http import JsonNotFound, ModelsNotReady, RequestGuard, client_errors, patch_bentoml
from service.openapi import ContractDocument
from service.preprocessing import decode_base64, images_to_rows
from service.runtime import ServedModel, cpu_count, load, warm_up
from service.schemas import (
    SPEC_ENDPOINTS,
    FeatureInfo,
    ImageInfo,
    IrisRecord,
    KobeRecord,
    ModelInfo,
    ModelsResponse,
    Pixels,
    Prediction,
    Predictions,
    records_field,
)
from service.specs import DIGITS, IRIS, KOBE, MALARIA, SPECS
from service.v2_infer import V2Infer, infer_app

logger = logging.getLogger("bentoml.service.model_serving")

MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", 16 * 1024 * 1024))
"""Requests with a larger body are refused with 413 before they are parsed."""

try:
    SERVICE_VERSION = version("bento-model-serving")
except PackageNotFoundError:  # running from a bento, not an installed checkout
    SERVICE_VERSION = "0.1.0"

ADAPTIVE_BATCHING = os.environ.get("ADAPTIVE_BATCHING", "on").lower() not in ("off", "0", "false")
"""ADAPTIVE_BATCHING=off serves every request with its own model call (for comparisons)."""

JSON_ROUTES = ("/iris", "/kobe", "/digits/pixels", "/digits/base64", "/malaria/base64")
MULTIPART_ROUTES = ("/digits", "/malaria")


def model_tag(name: str) -> str:
    """NAME_MODEL_VERSION picks the served version of each model (default: latest)."""
    return f"{name}:{os.environ.get(f'{name.upper()}_MODEL_VERSION', 'latest')}"


RUNTIME_IMAGE = bentoml.images.Image(base_image="python:3.11-slim", python_version="3.11", distro="none")
"""The container's base: BentoML's usual python:3.11-slim, as it is. For a known distro
BentoML's recipe first runs `apt-get install build-essential git gnupg2` (632 MB of the
image, measured); every package here installs from a wheel, so no distro recipe. The
packages are pinned in bentofile.yaml; docker/containerize.sh swaps the base offline."""

info_app = FastAPI(title="model metadata")
v2_infer = V2Infer()
patch_bentoml()  # before the server builds its middleware stack
guard_connections()  # before BentoML's worker builds uvicorn's config


@bentoml.asgi_app(info_app, path="/")
@bentoml.asgi_app(infer_app(v2_infer), path="/")  # mounted first: it takes only the V2 infer routes
@bentoml.service(
    name="model-serving",
    image=RUNTIME_IMAGE,
    workers=1,
    traffic={"timeout": 30, "max_concurrency": 512},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": [".*"]},
)
class ModelServing:
    """Digits, iris, kobe and malaria classifiers from the BentoML model store."""

    # Declared at class scope so `bentoml build` packages these exact models.
    digits_model = bentoml.models.BentoModel(model_tag("digits"))
    iris_model = bentoml.models.BentoModel(model_tag("iris"))
    kobe_model = bentoml.models.BentoModel(model_tag("kobe"))
    malaria_model = bentoml.models.BentoModel(model_tag("malaria"))

    def __init__(self) -> None:
        from prometheus_client import Histogram  # after BentoML set up multiprocess metrics

        buckets = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
        self._batch_requests = Histogram("model_batch_requests", "requests merged into one model call",
                                         ["model"], buckets=buckets)
        self._batch_rows = Histogram("model_batch_rows", "rows (records or images) in one model call",
                                     ["model"], buckets=buckets)
        self._gc_pauses = Histogram("python_gc_pause_seconds", "garbage collection pauses of the worker",
                                    ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
        # The GC callback only appends to a deque: it may run while prometheus_client holds
        # its (non-reentrant) lock, so observing there could deadlock the worker.
        self._gc_pending: collections.deque[tuple[int, float]] = collections.deque(maxlen=10_000)
        gc.callbacks.append(self._time_gc)
        self._gc_started = 0.0
        self._drift_gauges = DriftGauges()
        self._drift_window = configured_window()
        self.drift: dict[str, DriftMonitor] = {}
        # The CNN (LiteRT) gets every CPU of the container; the array models run
        # single-threaded (service/runtime.py, one_thread_per_call).
        self.threads = cpu_count()
        self.batchers: dict[str, ModelBatcher] = {}
        v2_infer.serve(self._v2_batcher)
        self._load_error: str | None = None
        # Load in the background so /livez answers at once and /readyz reports progress.
        threading.Thread(target=self._load_all, name="load-models", daemon=True).start()

    def _load_all(self) -> None:
        refs = {DIGITS.name: self.digits_model, IRIS.name: self.iris_model,
                KOBE.name: self.kobe_model, MALARIA.name: self.malaria_model}
        try:
            batchers, monitors = {}, {}
            for name, ref in refs.items():
                started = time.perf_counter()
                model = load(SPECS[name], ref, self.threads)  # class-scope refs resolve to stored models
                if self._drift_window:
                    monitors[name] = DriftMonitor(model.spec, Profile.of_model(model.tag, model.metadata),
                                                  self._drift_window, self._drift_gauges.publish)
                loaded = time.perf_counter()
                warm_up(model)
                batchers[name] = ModelBatcher(model, self._observe_batch, enabled=ADAPTIVE_BATCHING,
                                              after_batch=monitors[name].observe if name in monitors else None)
                logger.info("loaded %s in %.3f s, warmed up in %.3f s", model.tag, loaded - started,
                            time.perf_counter() - loaded)
            # Move everything loaded so far out of the collector's sight: full collections
            # then walk only per-request objects, not the models' object graphs.
            gc.collect()
            gc.freeze()
            self._record_gc_pauses()  # loading's collections, before ready (not a request's pause)
            self.drift = monitors
            self.batchers = batchers
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log
            self._load_error = f"{type(exc).__name__}: {exc}"
            logger.exception("loading the models failed")

    def _record_gc_pauses(self) -> None:
        while True:  # batches of several models run in parallel threads
            try:
                generation, seconds = self._gc_pending.popleft()
            except IndexError:
                break
            self._gc_pauses.labels(generation=str(generation)).observe(seconds)

    def _time_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_pending.append((info["generation"], time.perf_counter() - self._gc_started))

    def _observe_batch(self, model: str, requests: int, rows: int) -> None:
        self._record_gc_pauses()
        self._batch_requests.labels(model=model).observe(requests)
        self._batch_rows.labels(model=model).observe(rows)

    def __is_ready__(self) -> bool:
        return len(self.batchers) == len(SPECS)

    def _batcher(self, name: str) -> ModelBatcher:
        batcher = self.batchers.get(name)
        if batcher is None:
            raise ModelsNotReady(self._load_error or "models are still loading; see /readyz")
        return batcher

    async def _predict(self, name: str, rows: Any) -> Predictions:
        batcher = self._batcher(name)
        probabilities = await batcher.predict(rows)
        return label(batcher.model, probabilities)

    # --- tabular ------------------------------------------------------------------------

    @bentoml.api(route="/iris")
    @client_errors
    async def iris(self, records: Annotated[list[IrisRecord], records_field(IRIS)]) -> Predictions:  # type: ignore[valid-type]
        """Iris species for 1 or more flowers."""
        return await self._predict(IRIS.name, [r.model_dump() for r in records])

    @bentoml.api(route="/kobe")
    @client_errors
    async def kobe(self, records: Annotated[list[KobeRecord], records_field(KOBE)]) -> Predictions:  # type: ignore[valid-type]
        """Made/missed probability for 1 or more shots (raw Kaggle rows; extra columns are ignored)."""
        return await self._predict(KOBE.name, [r.model_dump() for r in records])

    # --- digits ---------------------------------------------------------------------------

    @bentoml.api(route="/digits/pixels")
    @client_errors
    async def digits_pixels(self, pixels: Annotated[list[Pixels], records_field(DIGITS)]) -> Predictions:
        """Digit for 1 or more 8x8 images given as 64 pixel values (0-16), as in scikit-learn."""
        return await self._predict(DIGITS.name, np.asarray(pixels, dtype=np.float64))

    @bentoml.api(route="/digits")
    @client_errors
    async def digits(self, images: Annotated[list[Path], records_field(DIGITS)]) -> Predictions:
        """Digit for 1 or more images in multipart field `images` (PNG, JPEG, WebP, BMP, TIFF or GIF, any size)."""
        return await self._predict(DIGITS.name, images_to_rows(DIGITS, [read_upload(p) for p in images]))

    @bentoml.api(route="/digits/base64")
    @client_errors
    async def digits_base64(self, images: Annotated[list[str], records_field(DIGITS)]) -> Predictions:
        """Digit for 1 or more base64-encoded images (PNG, JPEG, WebP, BMP, TIFF or GIF, any size)."""
        return await self._predict(DIGITS.name, images_to_rows(DIGITS, decode_base64(images)))

    # --- malaria --------------------------------------------------------------------------

    @bentoml.api(route="/malaria")
    @client_errors
    async def malaria(self, images: Annotated[list[Path], records_field(MALARIA)]) -> Predictions:
        """Parasitized/Uninfected for 1+ cell images in multipart field `images` (PNG, JPEG, WebP, BMP, TIFF or GIF)."""
        return await self._predict(MALARIA.name, images_to_rows(MALARIA, [read_upload(p) for p in images]))

    @bentoml.api(route="/malaria/base64")
    @client_errors
    async def malaria_base64(self, images: Annotated[list[str], records_field(MALARIA)]) -> Predictions:
        """Parasitized/Uninfected for 1 or more base64-encoded cell images (PNG, JPEG, WebP, BMP, TIFF or GIF)."""
        return await self._predict(MALARIA.name, images_to_rows(MALARIA, decode_base64(images)))

    # --- metadata -------------------------------------------------------------------------

    # --- Open Inference Protocol (KServe V2), sharing each model's batcher ---------------

    @info_app.get("/v2")
    def v2_server_metadata(self) -> dict[str, Any]:
        return {"name": "model-serving", "version": SERVICE_VERSION, "extensions": []}

    @info_app.get("/v2/health/live")
    def v2_live(self) -> dict[str, bool]:
        return {"live": True}

    @info_app.get("/v2/health/ready")
    def v2_ready(self) -> JSONResponse:
        ready = self.__is_ready__()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @info_app.get("/v2/models/{name}")
    def v2_model_metadata(self, name: str) -> JSONResponse:
        return self._v2_call(name, None, lambda model: v2_metadata(model))

    @info_app.get("/v2/models/{name}/versions/{version}")
    def v2_version_metadata(self, name: str, version: str) -> JSONResponse:
        return self._v2_call(name, version, lambda model: v2_metadata(model))

    @info_app.get("/v2/models/{name}/ready")
    def v2_model_ready(self, name: str) -> JSONResponse:
        return self._v2_call(name, None, lambda model: {"name": name, "ready": True})

    @info_app.get("/v2/models/{name}/versions/{version}/ready")
    def v2_version_ready(self, name: str, version: str) -> JSONResponse:
        return self._v2_call(name, version, lambda model: {"name": name, "ready": True})

    def _v2_batcher(self, name: str, version: str | None) -> ModelBatcher:
        if name not in SPECS:
            raise v2.ProtocolError(404, f"unknown model {name!r}; served: {sorted(SPECS)}")
        try:
            batcher = self._batcher(name)
        except ModelsNotReady as exc:
            raise v2.ProtocolError(503, str(exc)) from None
        served = batcher.model.tag.split(":")[1]
        if version is not None and version != served:
            raise v2.ProtocolError(404, f"model {name!r} has no version {version!r}; serving {served!r}")
        return batcher

    def _v2_call(self, name: str, version: str | None, answer: Any) -> JSONResponse:
        try:
            return JSONResponse(answer(self._v2_batcher(name, version).model))
        except v2.ProtocolError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    # --- metadata -------------------------------------------------------------------------

    @info_app.get("/models", response_model=ModelsResponse)
    def models(self) -> ModelsResponse:
        """The served models: tags, metrics, MLflow run ids and input schemas."""
        if not self.__is_ready__():
            raise_not_ready(self._load_error)
        return ModelsResponse(models=[model_info(b.model) for b in self.batchers.values()])

    @info_app.get("/models/{name}/drift", response_model=DriftReport,
                  responses={404: {"description": "unknown model, or monitoring off"},
                             503: {"description": "models still loading"}})
    def model_drift(self, name: str) -> DriftReport:
        """Recent inputs and predictions of a model compared with its training data (PSI per feature)."""
        if name not in SPECS:
            raise HTTPException(status_code=404, detail=f"unknown model {name!r}; served: {sorted(SPECS)}")
        if not self.__is_ready__():
            raise_not_ready(self._load_error)
        if name not in self.drift:
            raise HTTPException(status_code=404, detail="drift monitoring is off (DRIFT_WINDOW=0)")
        return self.drift[name].report()


ModelServing.add_asgi_middleware(JsonNotFound)  # type: ignore[attr-defined]
ModelServing.add_asgi_middleware(  # type: ignore[attr-defined]
    ContractDocument, generated=lambda: ModelServing.openapi_spec.asdict(),  # type: ignore[attr-defined]
    api_routes=JSON_ROUTES + MULTIPART_ROUTES, models=sorted(SPECS),
)
ModelServing.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard, max_body_bytes=MAX_BODY_BYTES,
    content_types={**{r: "application/json" for r in JSON_ROUTES},
                   **{r: "multipart/form-data" for r in MULTIPART_ROUTES}},
)


def label(model: ServedModel, probabilities: np.ndarray) -> Predictions:
    names = model.spec.class_names
    return Predictions(predictions=[
        Prediction(label=names[int(row.argmax())],
                   probabilities={n: float(p) for n, p in zip(names, row, strict=True)}, model=model.tag)
        for row in probabilities
    ])


def read_upload(path: Path) -> bytes:
    return Path(path).read_bytes()


def model_info(model: ServedModel) -> ModelInfo:
    spec, meta = model.spec, model.metadata
    return ModelInfo(
        name=spec.name, tag=model.tag, task=spec.task, endpoints=SPEC_ENDPOINTS[spec.name],
        class_names=list(spec.class_names), metrics=meta["metrics"],
        extra_metrics={k.removesuffix("_metrics"): v for k, v in meta.items()
                       if k.endswith("_metrics") and isinstance(v, dict)},
        mlflow_run_id=meta["mlflow_run_id"], trained_at=meta["trained_at"], quick=meta["quick"],
        max_batch_size=spec.batching.max_batch_size, max_latency_ms=spec.batching.max_latency_ms,
        features=[FeatureInfo(**f) for f in spec.schema()["features"]],
        image=ImageInfo(**spec.schema()["image"]) if spec.image else None,
    )


def v2_metadata(model: ServedModel) -> dict[str, Any]:
    probability_type = "FP32" if model.framework == "litert" else "FP64"
    return {
        "name": model.spec.name,
        "versions": [model.tag.split(":")[1]],
        "platform": "tensorflow_lite" if model.framework == "litert" else "sklearn",
        "inputs": [t.as_json() for t in v2.input_tensors(model.spec)],
        "outputs": [t.as_json() for t in v2.output_tensors(model.spec, probability_type)],
    }


def raise_not_ready(load_error: str | None) -> None:
    raise HTTPException(status_code=503, detail=load_error or "models are still loading")

