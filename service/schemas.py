"""Typed request and response models, generated from the model specs.

Field types, ranges and allowed values come from service.specs, so the OpenAPI document,
request validation and training all describe the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
)
from pydantic_core import PydanticCustomError

from service.errors import InvalidInput
from service.preprocessing import typed_frame
from service.specs import SPECS, CategoricalFeature, ModelSpec, NumericFeature

if TYPE_CHECKING:  # pandas is imported where a frame is built: the arbiter never needs it
    import pandas as pd


def _numbers_only(value: Any) -> Any:
    """Refuse what pydantic's lax mode would coerce: True as 1, "1_0" as 10, "5" as 5.

    Anything else goes on to the field's own check: an integer feature takes 5 and 5.0 and
    refuses 5.5; numpy numbers (from data files) are numbers.
    """
    if isinstance(value, bool | np.bool_):
        raise PydanticCustomError("number_type", "Input should be a valid number, not a boolean")
    if isinstance(value, str | bytes):
        raise PydanticCustomError("number_type", "Input should be a valid number, not a string")
    return value


NumbersOnly = BeforeValidator(_numbers_only)


SHOWN_CATEGORIES = 3
"""How many allowed values an unknown category's error names (GET /models lists them all)."""


def category_error(categories: tuple[str, ...]) -> str:
    """Short, whatever the number of categories: pydantic's own lists every one (kobe's
    action_type: 1.3 KB; a row with several unseen values: 5 KB)."""
    shown = ", ".join(repr(c) for c in categories[:SHOWN_CATEGORIES])
    if len(categories) <= SHOWN_CATEGORIES:
        return f"Input should be one of {shown}"
    return f"Input should be one of {len(categories)} values, e.g. {shown} (GET /models lists them)"


def _short_category_errors(categories: tuple[str, ...]) -> WrapValidator:
    message = category_error(categories)

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            if any(e["type"] == "literal_error" for e in exc.errors()):
                raise PydanticCustomError("literal_error", message) from None
            raise

    return WrapValidator(check)


def _field_type(feature: NumericFeature | CategoricalFeature) -> Any:
    if isinstance(feature, CategoricalFeature):
        return Annotated[Literal[feature.categories], Field(description=feature.description or None),
                         _short_category_errors(feature.categories)]
    number = int if feature.integer else float
    return Annotated[number, Field(ge=feature.minimum, le=feature.maximum, allow_inf_nan=False,
                                   description=feature.description or None), NumbersOnly]


def record_model(spec: ModelSpec) -> type[BaseModel]:
    """A pydantic model with one required, constrained field per feature of the spec;
    unknown fields are refused or ignored as the spec says (extra_fields)."""
    fields: dict[str, Any] = {f.name: (_field_type(f), ...) for f in spec.features}
    return create_model(  # type: ignore[call-overload]
        f"{spec.name.capitalize()}Record",
        __config__=ConfigDict(extra=spec.extra_fields, allow_inf_nan=False, title=f"{spec.name} record"),
        __doc__=spec.description,
        **fields,
    )


RECORD_MODELS: dict[str, type[BaseModel]] = {name: record_model(spec) for name, spec in SPECS.items() if spec.features}
"""The record model of every spec with named features (digits': its 64 pixels, for batch files)."""


def describe(error: ValidationError) -> str:
    """A pydantic error as one line: 'field: message; ...'."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in error.errors())


def validated_records(records: Iterable[Mapping[str, Any]], spec: ModelSpec) -> list[dict[str, Any]]:
    """Records checked by the same pydantic model as the typed endpoint.

    Raises InvalidInput naming the record and field of the first problem.
    """
    model = RECORD_MODELS[spec.name]
    rows = []
    for index, record in enumerate(records):
        try:
            rows.append(model.model_validate(record).model_dump())
        except ValidationError as exc:
            raise InvalidInput(f"record {index}: {describe(exc)}") from None
    return rows


def validated_frame(records: Iterable[Mapping[str, Any]], spec: ModelSpec) -> pd.DataFrame:
    """Validated records as the model's typed frame."""
    import pandas as pd

    return typed_frame(pd.DataFrame.from_records(validated_records(records, spec), columns=spec.feature_names), spec)

def records_field(spec: ModelSpec) -> Any:
    return Field(min_length=1, max_length=spec.max_records_per_call,
                 description=f"1 to {spec.max_records_per_call} inputs, answered in order")


class Prediction(BaseModel):
    label: str = Field(description="the predicted class name")
    probabilities: dict[str, float] = Field(description="probability of every class, by class name")
    model: str = Field(description="BentoML tag of the model that answered")


class Predictions(BaseModel):
    predictions: list[Prediction]


class FeatureInfo(BaseModel):
    name: str
    kind: Literal["NumericFeature", "CategoricalFeature"]
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    integer: bool | None = None
    categories: list[str] | None = None


class ImageInfo(BaseModel):
    height: int
    width: int
    color_mode: str
    scale: float
    invert_light_background: bool
    transparent_becomes: Literal["black", "white", "contrast"]


class ModelInfo(BaseModel):
    name: str
    tag: str
    task: str
    endpoints: list[str]
    class_names: list[str]
    metrics: dict[str, float]
    extra_metrics: dict[str, dict[str, float]] = Field(default_factory=dict,
                                                       description="e.g. kobe's prod (3PT) evaluation")
    mlflow_run_id: str
    trained_at: str
    quick: bool
    max_batch_size: int
    max_latency_ms: int
    features: list[FeatureInfo]
    image: ImageInfo | None = None
    role: str | None = Field(None, description="champion or challenger, when the build or store says so")
    shadow: str | None = Field(None, description="the challenger's tag when shadowing is on "
                                                 "(GET /models/{name}/shadow reports it)")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]

