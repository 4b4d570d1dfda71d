"""Every endpoint over real HTTP, compared with calling the stored model directly."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from service.litert import LiteRTModel
from service.preprocessing import encoded_image_to_array
from service.schemas import validated_frame
from service.specs import DIGITS, IRIS, KOBE, LITERT_MODEL_FILE, MALARIA, SPECS

pytestmark = pytest.mark.slow


def direct_probabilities(tag: str, rows) -> np.ndarray:
    """The stored model called in-process, without the service."""
    import bentoml

    stored = bentoml.models.get(tag)
    if tag.startswith("malaria:"):
        model = LiteRTModel(open(stored.path_of(LITERT_MODEL_FILE), "rb").read(), threads=1)
        return model(np.asarray(rows, dtype=np.float32))
    if SPECS[tag.split(":")[0]].numeric_only and isinstance(rows, pd.DataFrame):
        rows = rows.to_numpy(dtype=np.float64)  # as the service hands it: an array, in feature order
    return bentoml.sklearn.load_model(stored).predict_proba(rows)


def check(response: requests.Response, expected_rows: int) -> tuple[str, np.ndarray]:
    """Status, shape and labels of a prediction response; returns (tag, probabilities)."""
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == expected_rows
    tags = {p["model"] for p in predictions}
    assert len(tags) == 1
    tag = tags.pop()
    spec = SPECS[tag.split(":")[0]]
    probabilities = np.array([[p["probabilities"][c] for c in spec.class_names] for p in predictions])
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [p["label"] for p in predictions] == [spec.class_names[i] for i in probabilities.argmax(axis=1)]
    return tag, probabilities


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def rendered_digits(count: int) -> tuple[np.ndarray, list[bytes]]:
    """scikit-learn digits drawn as dark-on-light 32x32 PNGs, as a user would send them."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data[:count]
    images = [png(Image.fromarray((255 - np.kron(p.reshape(8, 8), np.ones((4, 4))) * 255 / 16)
                                  .round().astype(np.uint8))) for p in pixels]
    return pixels, images


def test_iris_matches_the_model(server):
    from sklearn.datasets import load_iris

    frame = pd.DataFrame(load_iris().data[::10], columns=IRIS.feature_names)
    response = requests.post(f"{server.url}/iris", json={"records": frame.to_dict("records")})
    tag, probabilities = check(response, len(frame))
    expected = direct_probabilities(tag, validated_frame(frame.to_dict("records"), IRIS))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-9)


def test_kobe_accepts_raw_kaggle_rows_and_matches_the_model(server, settings):
    raw = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").head(40)
    rows = json.loads(raw.to_json(orient="records"))  # every Kaggle column, ids and all; NaN -> null
    response = requests.post(f"{server.url}/kobe", json={"records": rows})
    tag, probabilities = check(response, len(rows))
    np.testing.assert_allclose(probabilities, direct_probabilities(tag, validated_frame(rows, KOBE)),
                               rtol=1e-6, atol=1e-9)


def test_one_record_per_call_gives_the_same_answer_as_many(server, settings):
    raw = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(5)
    rows = json.loads(raw.to_json(orient="records"))
    _, together = check(requests.post(f"{server.url}/kobe", json={"records": rows}), 5)
    one_by_one = np.vstack([check(requests.post(f"{server.url}/kobe", json={"records": [r]}), 1)[1] for r in rows])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-9)


def test_digits_pixels_match_the_model(server):
    from sklearn.datasets import load_digits

    pixels = load_digits().data[:30]
    response = requests.post(f"{server.url}/digits/pixels", json={"pixels": pixels.tolist()})
    tag, probabilities = check(response, 30)
    np.testing.assert_allclose(probabilities, direct_probabilities(tag, pixels), rtol=1e-6, atol=1e-9)
    assert (probabilities.argmax(axis=1) == load_digits().target[:30]).mean() >= 0.8


def test_digit_images_multipart_and_base64_match_the_pixels(server):
    pixels, images = rendered_digits(12)
    multipart = requests.post(f"{server.url}/digits", files=[("images", (f"{i}.png", b, "image/png"))
                                                             for i, b in enumerate(images)])
    encoded = requests.post(f"{server.url}/digits/base64",
                            json={"images": [base64.b64encode(b).decode() for b in images]})
    tag, from_files = check(multipart, 12)
    _, from_base64 = check(encoded, 12)
    np.testing.assert_allclose(from_files, from_base64, rtol=1e-9)
    recovered = np.stack([encoded_image_to_array(b, DIGITS.image).reshape(-1) for b in images])
    np.testing.assert_allclose(recovered, pixels, atol=0.1)
    np.testing.assert_allclose(from_files, direct_probabilities(tag, recovered), rtol=1e-6, atol=1e-9)


def test_malaria_multipart_and_base64_match_the_model(server, malaria_image_paths):
    paths = malaria_image_paths["Parasitized"][:4] + malaria_image_paths["Uninfected"][:4]
    raw = [p.read_bytes() for p in paths]
    # The service must take any size, RGB or grayscale, PNG or JPEG: send variants too.
    variant = Image.open(paths[0]).convert("RGB").resize((140, 120))
    raw += [png(variant, "JPEG"), png(variant, "PNG")]
    multipart = requests.post(f"{server.url}/malaria", files=[("images", (f"{i}.img", b)) for i, b in enumerate(raw)])
    encoded = requests.post(f"{server.url}/malaria/base64",
                            json={"images": [base64.b64encode(b).decode() for b in raw]})
    tag, from_files = check(multipart, len(raw))
    _, from_base64 = check(encoded, len(raw))
    np.testing.assert_allclose(from_files, from_base64, rtol=1e-5, atol=1e-6)
    arrays = np.stack([encoded_image_to_array(b, MALARIA.image) for b in raw])
    np.testing.assert_allclose(from_files, direct_probabilities(tag, arrays), rtol=1e-4, atol=1e-5)


def metric_total(text: str, name: str, model: str) -> float:
    pattern = rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, text, flags=re.MULTILINE))


def batching_under_load(server, model: str, call, requests_count: int = 256) -> tuple[float, float]:
    """Send requests_count calls from 32 threads; (requests merged, model calls) from /metrics."""
    before = requests.get(f"{server.url}/metrics").text
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(call, range(requests_count)))
    assert codes == [200] * requests_count
    after = requests.get(f"{server.url}/metrics").text

    def grown(name: str) -> float:
        return metric_total(after, name, model) - metric_total(before, name, model)

    return grown("model_batch_requests_sum"), grown("model_batch_requests_count")


def test_concurrent_requests_are_served_in_batches(server, malaria_image_paths):
    """The CNN runs on its own thread, so requests from 32 threads arrive while it computes
    and join the next batch. (An idle model runs a request at once, and an idle sklearn
    model runs it inline on the event loop: a model that is never busy never batches.)"""
    body = {"images": [base64.b64encode(malaria_image_paths["Parasitized"][0].read_bytes()).decode()]}
    merged, calls = batching_under_load(
        server, "malaria", lambda _: requests.post(f"{server.url}/malaria/base64", json=body).status_code)
    assert merged == 256
    assert calls < 256, "every request ran alone: adaptive batching did not merge any"
    metrics = requests.get(f"{server.url}/metrics").text
    assert 'bentoml_service_request_duration_seconds_bucket{endpoint="/malaria/base64"' in metrics


def test_models_lists_tags_metrics_run_ids_and_schemas(server):
    import bentoml

    response = requests.get(f"{server.url}/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(models) == set(SPECS)
    for name, info in models.items():
        stored = bentoml.models.get(info["tag"])
        assert info["mlflow_run_id"] == stored.info.metadata["mlflow_run_id"]
        assert info["metrics"] == pytest.approx(stored.info.metadata["metrics"])
        assert info["class_names"] == list(SPECS[name].class_names)
    assert [f["name"] for f in models["kobe"]["features"]] == KOBE.feature_names
    assert "prod" in models["kobe"]["extra_metrics"]
    assert models["malaria"]["image"]["height"] == 50


def test_openapi_types_every_field(server):
    document = requests.get(f"{server.url}/docs.json").json()
    schemas = document["components"]["schemas"]
    for route in ("/iris", "/kobe", "/digits/pixels", "/digits/base64", "/malaria/base64", "/digits", "/malaria"):
        operation = document["paths"][route]["post"]
        assert operation["requestBody"]["content"], route
        assert "200" in operation["responses"], route

    def resolve(node):
        return schemas[node["$ref"].split("/")[-1]] if "$ref" in node else node

    iris = next(s for n, s in schemas.items() if n.startswith("IrisRecord"))
    for feature in IRIS.features:
        field = iris["properties"][feature.name]
        assert field["type"] == "number" and field["minimum"] == feature.minimum and field["maximum"] == feature.maximum
    assert set(iris["required"]) == set(IRIS.feature_names)
    kobe = next(s for n, s in schemas.items() if n.startswith("KobeRecord"))
    assert set(kobe["properties"]["action_type"]["enum"]) == set(KOBE.features[0].categories)
    assert kobe["properties"]["period"]["type"] == "integer"
    prediction = resolve(schemas["Prediction"])
    assert set(prediction["properties"]) == {"label", "probabilities", "model"}


def test_health_probes(server):
    assert requests.get(f"{server.url}/livez").status_code == 200
    assert requests.get(f"{server.url}/readyz").status_code == 200
