"""The FastAPI app a competent engineer would write for these models: the comparator.

Same models (the versions the service serves, service/versions.py, from the store in BENTOML_HOME), same request checks
(the service's pydantic record models: ranges, categories, extra fields forbidden, 1 to
N records) and the same response shape as the service's POST /iris, /kobe,
/digits/pixels and /malaria/base64. What makes it fast, and fair:

- `async def` routes with the model call inline: no thread hand-off per request;
- numeric inputs go to the model as a numpy array (no DataFrame per request), with
  scikit-learn's per-call checks off (`assume_finite`, `skip_parameter_validation`):
  pydantic already refused NaN, infinities and out-of-range values;
- BLAS/OpenMP limited to one thread (threadpoolctl): one-row calls gain nothing from more;
- kobe's stored pipeline gets a DataFrame of the records, as its training did (the
  service's own shortcut past the pipeline's first step and the trees' category encoder,
  service/arrays.py, is not what one would write by hand);
- the CNN runs its LiteRT file (the service's own loader), images decoded by the
  service's preprocessing;
- uvicorn with uvloop and httptools, no access log (bench.py's command line).

No batching, no metrics, no body-size or content-type guard: what the service adds.

    BENTOML_HOME=... uvicorn fastapi_app:app --app-dir loadtests/compare --loop uvloop \\
        --http httptools --host 127.0.0.1 --port 3001 --workers 1 --no-access-log
"""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
import sklearn
from fastapi import FastAPI
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits

from service.preprocessing import decode_base64, images_to_rows, records_frame
from service.routes import pixel_row
from service.runtime import ServedModel, cpu_count, load
from service.schemas import RECORD_MODELS
from service.specs import DIGITS, IRIS, KOBE, MALARIA, ModelSpec
from service.versions import served_tag

threadpool_limits(limits=1)
sklearn.set_config(assume_finite=True, skip_parameter_validation=True)


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    model: str


class Predictions(BaseModel):
    predictions: list[Prediction]


def stored(spec: ModelSpec) -> tuple[str, list[str], object]:
    model = bentoml.models.get(served_tag(spec.name))
    return str(model.tag), list(spec.class_names), model


def labelled(probabilities: np.ndarray, class_names: list[str], tag: str) -> Predictions:
    return Predictions(predictions=[
        Prediction(label=class_names[int(row.argmax())],
                   probabilities={n: float(p) for n, p in zip(class_names, row.tolist(), strict=True)}, model=tag)
        for row in probabilities
    ])


def records_of(spec: ModelSpec) -> object:
    return Annotated[list[RECORD_MODELS[spec.name]], Field(min_length=1, max_length=spec.max_records_per_call)]  # type: ignore[index]


IRIS_TAG, IRIS_CLASSES, _iris = stored(IRIS)
iris_model = bentoml.sklearn.load_model(_iris)
DIGITS_TAG, DIGITS_CLASSES, _digits = stored(DIGITS)
digits_model = bentoml.sklearn.load_model(_digits)
KOBE_TAG, KOBE_CLASSES, _kobe = stored(KOBE)
kobe_model = bentoml.sklearn.load_model(_kobe)  # the stored pipeline, on a DataFrame of the records
SERVED: dict[str, ServedModel] = {MALARIA.name: load(MALARIA, bentoml.models.get(served_tag("malaria")), cpu_count())}


class IrisRequest(BaseModel):
    records: records_of(IRIS)  # type: ignore[valid-type]


class KobeRequest(BaseModel):
    records: records_of(KOBE)  # type: ignore[valid-type]


DigitPixels = pixel_row(DIGITS)


class PixelsRequest(BaseModel):
    pixels: Annotated[list[DigitPixels], Field(min_length=1, max_length=DIGITS.max_records_per_call)]


class ImagesRequest(BaseModel):
    images: Annotated[list[str], Field(min_length=1, max_length=MALARIA.max_records_per_call)]


app = FastAPI(title="hand-written FastAPI comparator")


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/iris", response_model=Predictions)
async def iris(request: IrisRequest) -> Predictions:
    rows = np.array([[getattr(r, name) for name in IRIS.feature_names] for r in request.records], dtype=np.float64)
    return labelled(iris_model.predict_proba(rows), IRIS_CLASSES, IRIS_TAG)


@app.post("/digits/pixels", response_model=Predictions)
async def digits_pixels(request: PixelsRequest) -> Predictions:
    return labelled(digits_model.predict_proba(np.asarray(request.pixels, dtype=np.float64)),
                    DIGITS_CLASSES, DIGITS_TAG)


@app.post("/kobe", response_model=Predictions)
async def kobe(request: KobeRequest) -> Predictions:
    rows = records_frame([r.model_dump() for r in request.records], KOBE)
    return labelled(kobe_model.predict_proba(rows), KOBE_CLASSES, KOBE_TAG)


@app.post("/malaria/base64", response_model=Predictions)
async def malaria_base64(request: ImagesRequest) -> Predictions:
    served = SERVED["malaria"]
    rows = images_to_rows(MALARIA, decode_base64(request.images))
    return labelled(served.predict_proba(rows), list(MALARIA.class_names), served.tag)
