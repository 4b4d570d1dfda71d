"""A minimal hand-written FastAPI app serving the iris model, for comparison only.

Same model (`iris:latest` from the BentoML store in BENTOML_HOME), same request and
response shape as the service's POST /iris, none of its machinery: no batching, no
metrics, no body-size or content-type guard. Pydantic checks the same four fields and
ranges. The sync route runs in Starlette's thread pool, one model call per request.

    BENTOML_HOME=... uvicorn fastapi_app:app --app-dir loadtests/compare \
        --host 127.0.0.1 --port 3001 --workers 1 --no-access-log
"""

from __future__ import annotations

import os

import bentoml
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

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


@app.post("/iris", response_model=Predictions)
def iris(request: IrisRequest) -> Predictions:
    frame = pd.DataFrame([r.model_dump() for r in request.records], columns=COLUMNS, dtype="float64")
    probabilities = model.predict_proba(frame)
    return Predictions(predictions=[
        Prediction(label=CLASS_NAMES[int(row.argmax())],
                   probabilities={n: float(p) for n, p in zip(CLASS_NAMES, row, strict=True)}, model=TAG)
        for row in probabilities
    ])
