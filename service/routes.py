"""The typed routes of every model, made from its spec.

A route per input form, so the OpenAPI document shows each model's own schema:
- tabular models: `POST /{name}` with `{"records": [...]}`, one object per row;
- image models: `POST /{name}` (multipart, files under `images`) and `POST /{name}/base64`
  (`{"images": ["<base64>", ...]}`); with pixel features (digits) also
  `POST /{name}/pixels` (`{"pixels": [[...], ...]}`, rows of the model's own values).

Why generated rather than written out: a model added later (one spec in service/specs.py)
must get its routes, its content-type rules and its place in /models without anyone
editing this service; written out, each route was four lines that differed only in the
model's name, and forgetting them was the way a fifth model broke. Each route is still a
named method of the service class (`iris`, `digits_base64`, ...) with a real signature:
BentoML documents, validates and batches it exactly as a hand-written one.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from service import tracing
from service.decoding import image_rows
from service.errors import answer_errors
from service.preprocessing import ACCEPTED_FORMATS_TEXT, decode_base64
from service.schemas import RECORD_MODELS, NumbersOnly, Predictions, records_field
from service.specs import SPECS, ModelSpec

Kind = Literal["records", "upload", "base64", "pixels"]
MEDIA_TYPES: dict[Kind, str] = {"records": "application/json", "upload": "multipart/form-data",
                                "base64": "application/json", "pixels": "application/json"}


@dataclass(frozen=True)
class TypedRoute:
    spec: ModelSpec
    kind: Kind

    @property
    def path(self) -> str:
        return f"/{self.spec.name}" if self.kind in ("records", "upload") else f"/{self.spec.name}/{self.kind}"

    @property
    def method_name(self) -> str:
        return self.spec.name if self.kind in ("records", "upload") else f"{self.spec.name}_{self.kind}"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]


def routes_of(spec: ModelSpec) -> list[TypedRoute]:
    if spec.task == "tabular":
        return [TypedRoute(spec, "records")]
    kinds: list[Kind] = ["upload", "base64", *(["pixels"] if spec.features else [])]
    return [TypedRoute(spec, kind) for kind in kinds]


ROUTES: list[TypedRoute] = [route for spec in SPECS.values() for route in routes_of(spec)]
"""Every typed route of the service, model by model."""


def endpoints(name: str) -> list[str]:
    """The typed routes serving model `name` (for /models)."""
    return [route.path for route in ROUTES if route.spec.name == name]


Predict = Callable[[Any, str, Any], Awaitable[Predictions]]
"""(service instance, model name, rows) -> predictions: the service's one model call."""


def endpoint(route: TypedRoute, predict: Predict) -> Callable[..., Awaitable[Any]]:
    """The route's function: its input becomes the model's rows, then `predict`."""
    spec, name = route.spec, route.spec.name

    async def run(self: Any, make_rows: Callable[[], Any]) -> Any:
        """The input's rows (a value, or awaited), then the model call: the same for every kind."""
        if not tracing.enabled():
            rows = make_rows()
            return await predict(self, name, await rows if inspect.isawaitable(rows) else rows)
        tracing.request_read(name)
        with tracing.span("preprocess", model=name):
            rows = make_rows()
            if inspect.isawaitable(rows):
                rows = await rows
        return await predict(self, name, rows)

    if route.kind == "records":
        async def call(self: Any, records: list) -> Any:
            return await run(self, lambda: [record.model_dump() for record in records])
        parameter, annotation = "records", list[RECORD_MODELS[name]]  # type: ignore[index]
        doc = f"{spec.description} Takes 1 to {spec.max_records_per_call} records, answered in order."
    elif route.kind == "upload":
        async def call(self: Any, images: list) -> Any:
            return await run(self, lambda: image_rows(spec, [Path(path) for path in images]))
        parameter, annotation = "images", list[Path]
        doc = f"{spec.description} Images in multipart field `images` ({ACCEPTED_FORMATS_TEXT}, any size)."
    elif route.kind == "base64":
        async def call(self: Any, images: list) -> Any:
            return await run(self, lambda: image_rows(spec, decode_base64(images)))
        parameter, annotation = "images", list[str]
        doc = f"{spec.description} Base64-encoded images ({ACCEPTED_FORMATS_TEXT}, any size)."
    else:
        async def call(self: Any, pixels: list) -> Any:
            return await run(self, lambda: np.asarray(pixels, dtype=np.float64))
        parameter, annotation = "pixels", list[pixel_row(spec)]  # type: ignore[misc]
        doc = f"{spec.description} Images given as rows of {len(spec.features)} pixel values."
    wrapped = answer_errors(call)
    wrapped.__name__ = wrapped.__qualname__ = route.method_name
    wrapped.__doc__ = doc
    wrapped.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter(parameter, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=Annotated[annotation, records_field(spec)]),
    ], return_annotation=Predictions)
    return wrapped


def pixel_row(spec: ModelSpec) -> Any:
    """One image as the model's flat pixel features, each within the spec's range."""
    low = min(f.minimum for f in spec.numeric_features)
    high = max(f.maximum for f in spec.numeric_features)
    image = spec.image
    assert image is not None
    value = Annotated[float, Field(ge=low, le=high, allow_inf_nan=False), NumbersOnly]
    return Annotated[list[value], Field(  # type: ignore[valid-type]
        min_length=len(spec.features), max_length=len(spec.features),
        description=f"{image.height}x{image.width} pixels row by row, {low:g} to {high:g}")]


TAKEN_NAMES = frozenset({"models", "metrics", "livez", "readyz", "healthz", "docs", "docs.json", "schema.json",
                         "static_content", "v2", "instruments"})
"""Paths of the service's own routes (BentoML's probes, metrics and pages, /models, V2) and
attributes its instances set: a model may not be named after one."""


def add_typed_routes(service_class: type, predict: Predict) -> None:
    """Give the (not yet decorated) service class one BentoML API method per typed route."""
    import bentoml

    for route in ROUTES:
        if route.spec.name in TAKEN_NAMES:
            raise TypeError(f"model {route.spec.name!r} would take the service's own /{route.spec.name}: "
                            f"name it otherwise (taken: {sorted(TAKEN_NAMES)})")
        if hasattr(service_class, route.method_name):
            raise TypeError(f"{service_class.__name__}.{route.method_name} exists: "
                            f"the route {route.path} of model {route.spec.name!r} would replace it")
        setattr(service_class, route.method_name, bentoml.api(route=route.path)(endpoint(route, predict)))
