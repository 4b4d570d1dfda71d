"""A minimal hand-written FastAPI app serving the models, for comparison only.

Same models (`NAME:latest` from the BentoML store in BENTOML_HOME), same request and
response shapes as the service's POST /iris, /kobe, /digits/pixels and /malaria/base64,
none of its machinery: no batching, no metrics, no body-size or content-type guard. The
seed projects' approach: a sync route per model, run in Starlette's thread pool, one
model call per request. Iris has its own hand-written pydantic model; the other routes
reuse the service's record models and image preprocessing (the same checks and inputs),
and the same compiled model call (service.runtime).

    BENTOML_HOME=... uvicorn fastapi_app:app --app-dir loadtests/compare \
        --host 127.0.0.1 --port 3001 --workers 1 --no-access-log
"""

from __future__ import annotations

import os
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from service.preprocessing import decode_base64, images_to_rows, records_frame
from service.runtime import ServedModel, cpu_count, load
from service.schemas import KobeRecord, Pixels
from service.specs import DIGITS, KOBE, MALARIA

MODEL_TAG = os.environ.get("IRIS_MODEL_TAG", "iris:latest")
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

_stored = bentoml.models.get(MODEL_TAG)
TAG = str(_stored.tag)
CLASS_NAMES: list[str] = list(_stored.info.metadata["class_names"])
model = bentoml.sklearn.load_model(_stored)

Measurement = Field(ge=0.0, le=30.0, allow_inf_nan=False)  # cm, as the service checks


class IrisRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sepal_length: float = Measurement
    sepal_width: float = Measurement
    petal_length: float = Measurement
    petal_width: float = Measurement


class IrisRequest(BaseModel):
    records: list[IrisRecord] = Field(min_length=1, max_length=1000)


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    model: str


class Predictions(BaseModel):
    predictions: list[Prediction]


app = FastAPI(title="iris (plain FastAPI)")


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ok"}


def labelled(probabilities: np.ndarray, class_names: list[str], tag: str) -> Predictions:
    return Predictions(predictions=[
        Prediction(label=class_names[int(row.argmax())],
                   probabilities={n: float(p) for n, p in zip(class_names, row, strict=True)}, model=tag)
        for row in probabilities
    ])


@app.post("/iris", response_model=Predictions)
def iris(request: IrisRequest) -> Predictions:
    frame = pd.DataFrame([r.model_dump() for r in request.records], columns=COLUMNS, dtype="float64")
    return labelled(model.predict_proba(frame), CLASS_NAMES, TAG)


MODELS: dict[str, ServedModel] = {
    spec.name: load(spec, bentoml.models.get(f"{spec.name}:latest"), cpu_count()) for spec in (KOBE, DIGITS, MALARIA)
}


def predict(name: str, rows: object) -> Predictions:
    served = MODELS[name]
    return labelled(served.predict_proba(rows), list(served.spec.class_names), served.tag)


class KobeRequest(BaseModel):
    records: Annotated[list[KobeRecord], Field(min_length=1, max_length=KOBE.max_records_per_call)]  # type: ignore[valid-type]


class PixelsRequest(BaseModel):
    pixels: Annotated[list[Pixels], Field(min_length=1, max_length=DIGITS.max_records_per_call)]


class ImagesRequest(BaseModel):
    images: Annotated[list[str], Field(min_length=1, max_length=MALARIA.max_records_per_call)]


@app.post("/kobe", response_model=Predictions)
def kobe(request: KobeRequest) -> Predictions:
    return predict("kobe", records_frame([r.model_dump() for r in request.records], KOBE))


@app.post("/digits/pixels", response_model=Predictions)
def digits_pixels(request: PixelsRequest) -> Predictions:
    return predict("digits", np.asarray(request.pixels, dtype=np.float64))


@app.post("/malaria/base64", response_model=Predictions)
def malaria_base64(request: ImagesRequest) -> Predictions:
    return predict("malaria", images_to_rows(MALARIA, decode_base64(request.images)))
