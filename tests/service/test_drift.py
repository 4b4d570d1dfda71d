"""Drift monitoring over real HTTP: real rows replayed into a server with a small window."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image, ImageOps

from service.drift import MIN_ROWS, PSI_THRESHOLD, PUBLISH_INTERVAL_S
from service.specs import MALARIA, SPECS
from tests.deploy.test_monitoring import BENTOML_METRICS
from tests.servers import Server, free_port

pytestmark = pytest.mark.slow

WINDOW = 300
"""DRIFT_WINDOW of the test server: above MIN_ROWS, small enough to replay quickly."""


@pytest.fixture(scope="module")
def drift_server(quick_models) -> Iterator[Server]:
    server = Server({"DRIFT_WINDOW": str(WINDOW)})
    try:
        server.wait("/readyz")
        yield server
    finally:
        server.stop()


def report_after(server: Server, model: str, rows_seen: int) -> dict:
    """The drift report once the monitor has taken in rows_seen rows (it runs after each
    batch's answers are sent, so a moment after the last response)."""
    deadline = time.monotonic() + 10
    while True:
        response = requests.get(f"{server.url}/models/{model}/drift")
        assert response.status_code == 200, response.text
        report = response.json()
        if report["rows_seen"] >= rows_seen or time.monotonic() > deadline:
            assert report["rows_seen"] == rows_seen
            return report
        time.sleep(0.05)


def flagged(report: dict) -> set[str]:
    return {f["name"] for f in report["features"] if f["drifted"]}


def send_kobe(server: Server, raw: pd.DataFrame) -> None:
    rows = json.loads(raw.to_json(orient="records"))  # raw Kaggle rows, NaN -> null
    for start in range(0, len(rows), 50):
        response = requests.post(f"{server.url}/kobe", json={"records": rows[start:start + 50]})
        assert response.status_code == 200, response.text


def send_malaria(server: Server, images: list[bytes]) -> None:
    step = MALARIA.max_records_per_call
    for start in range(0, len(images), step):
        encoded = [base64.b64encode(data).decode() for data in images[start:start + step]]
        response = requests.post(f"{server.url}/malaria/base64", json={"images": encoded})
        assert response.status_code == 200, response.text


def test_kobe_dev_shots_do_not_drift_and_prod_three_pointers_do(drift_server, settings):
    folder = settings.data_dir / "kobe"
    # A random sample: the file runs season by season, and a window of one season would
    # rightly show drift in `season`.
    dev = pd.read_parquet(folder / "dataset_kobe_dev.parquet").sample(WINDOW, random_state=1)
    send_kobe(drift_server, dev)
    report = report_after(drift_server, "kobe", WINDOW)
    assert report["window"] == WINDOW and report["window_size"] == WINDOW
    assert not report["drifted"], flagged(report)
    assert all(0 <= f["statistic"] < PSI_THRESHOLD for f in report["features"])

    prod = pd.read_parquet(folder / "dataset_kobe_prod.parquet").sample(WINDOW, random_state=1)
    send_kobe(drift_server, prod)
    report = report_after(drift_server, "kobe", 2 * WINDOW)
    assert report["drifted"] and report["window"] == WINDOW
    assert {"shot_distance", "shot_zone_basic", "shot_zone_range"} <= flagged(report)
    assert not flagged(report) & {"period", "playoffs", "opponent"}  # the game context did not change

    deadline = time.monotonic() + 10  # the gauges follow the last batch within PUBLISH_INTERVAL_S
    while True:
        metrics = requests.get(f"{drift_server.url}/metrics").text
        value = re.search(r'model_input_drift\{[^}]*feature="shot_distance"[^}]*model="kobe"[^}]*\} (\S+)', metrics)
        if (value and float(value.group(1)) > PSI_THRESHOLD) or time.monotonic() > deadline:
            break
        time.sleep(PUBLISH_INTERVAL_S / 2)
    assert value and float(value.group(1)) > PSI_THRESHOLD, metrics[:2000]
    assert re.search(r'model_drift_window_rows\{[^}]*model="kobe"[^}]*\} 300(\.0)?\b', metrics)
    assert re.search(r'model_prediction_drift\{[^}]*model="kobe"[^}]*\} \S+', metrics)
    for name in BENTOML_METRICS:  # BentoML's names, as the alert rules and the dashboard query them
        assert re.search(rf'^{name}(_bucket)?\{{endpoint="/kobe",http_response_code="200"', metrics, re.M), name


def random_cells(settings, count: int) -> list[Path]:
    """Cell images drawn at random over every slide (file names group them by slide)."""
    root = settings.data_dir / "malaria" / "cell_images"
    files = sorted(p for c in MALARIA.class_names for p in (root / c).glob("*.png"))
    return [files[i] for i in np.random.default_rng(2).choice(len(files), count, replace=False)]


def inverted(data: bytes) -> bytes:
    buffer = io.BytesIO()
    ImageOps.invert(Image.open(io.BytesIO(data)).convert("RGB")).save(buffer, format="PNG")
    return buffer.getvalue()


def test_malaria_cells_do_not_drift_and_inverted_cells_do(drift_server, settings):
    cells = [path.read_bytes() for path in random_cells(settings, WINDOW)]
    send_malaria(drift_server, cells)
    report = report_after(drift_server, "malaria", WINDOW)
    assert not report["drifted"], report

    send_malaria(drift_server, [inverted(data) for data in cells])
    report = report_after(drift_server, "malaria", 2 * WINDOW)
    assert report["drifted"]
    assert {"image_mean", "image_dark_fraction"} <= flagged(report), report


def test_no_verdict_before_the_minimum_and_404_for_unknown_models(drift_server):
    report = requests.get(f"{drift_server.url}/models/iris/drift").json()  # nothing sent to iris here
    assert report["window"] == 0 and report["minimum_rows"] == MIN_ROWS and not report["drifted"]
    assert all(f["statistic"] is None for f in [*report["features"], report["prediction"]])
    assert [f["name"] for f in report["features"]] == SPECS["iris"].feature_names
    response = requests.get(f"{drift_server.url}/models/nope/drift")
    assert response.status_code == 404 and "unknown model 'nope'" in response.text


def test_openapi_describes_the_drift_report(drift_server):
    document = requests.get(f"{drift_server.url}/docs.json").json()
    operation = document["paths"]["/models/{name}/drift"]["get"]
    assert {"200", "404"} <= set(operation["responses"])
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    report = document["components"]["schemas"][reference.split("/")[-1]]
    assert {"drifted", "window", "features", "prediction"} <= set(report["properties"])
    assert report["properties"]["drifted"]["type"] == "boolean"


def test_a_real_prometheus_scrapes_the_drift_gauges(drift_server, settings, tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("no prometheus binary (Debian: apt-get install prometheus; .ci/run does as root)")
    prod = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").sample(WINDOW, random_state=2)
    send_kobe(drift_server, prod)
    config = {"global": {"scrape_interval": "1s"},
              "scrape_configs": [{"job_name": "model-serving",
                                  "static_configs": [{"targets": [f"127.0.0.1:{drift_server.port}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    process = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    try:
        query = 'model_input_drift{model="kobe",feature="shot_distance"} > 0.2'
        results: list = []
        deadline = time.monotonic() + 60
        while not results and time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5)
                results = answer.json()["data"]["result"] if answer.ok else []
        assert results, (tmp_path / "prometheus.log").read_text()[-2000:]
        windows = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                               params={"query": "model_drift_window_rows"}).json()["data"]["result"]
        assert {r["metric"]["model"] for r in windows} == set(SPECS)  # every model, traffic or not
    finally:
        process.terminate()
        process.wait(30)


def test_every_stored_model_carries_its_training_profile(quick_models):
    import bentoml
    from mlflow import MlflowClient

    from service.drift import IMAGE_STATISTICS, Profile

    for name, result in quick_models.items():
        spec = SPECS[name]
        profile = Profile.of_model(result.tag, bentoml.models.get(result.tag).info.metadata)
        expected = list(IMAGE_STATISTICS) if spec.image else spec.feature_names
        assert [f.name for f in profile.features] == expected
        assert len(profile.prediction) == len(spec.class_names) and sum(profile.prediction) == pytest.approx(1.0)
        logged = MlflowClient().download_artifacts(result.mlflow_run_id, "drift_profile.json")
        assert Profile.from_json(json.loads(Path(logged).read_text())) == profile


def test_drift_window_0_turns_monitoring_off_and_says_so(quick_models):
    server = Server({"DRIFT_WINDOW": "0"})
    try:
        server.wait("/readyz")
        answer = requests.post(server.url + "/iris", json={"records": [
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}, timeout=10)
        assert answer.status_code == 200
        report = requests.get(server.url + "/models/iris/drift", timeout=10)
        assert report.status_code == 404 and "monitoring is off" in report.text
        assert "model_input_drift{" not in requests.get(server.url + "/metrics", timeout=10).text
    finally:
        server.stop()
