"""Shadow traffic in a real server: the same bytes with it on and off, an exact report,
its place in /models, /metrics and the 404 when it is off."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from service.specs import IRIS
from tests.service.test_endpoints import direct_probabilities

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IRIS_ROWS = np.random.default_rng(11).uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], size=(40, 4)).round(2)


def calls(malaria_image_paths):
    """(method, path, keyword arguments) of requests over every route kind."""
    cells = [p for paths in malaria_image_paths.values() for p in paths[:3]]
    iris = [{"records": [dict(zip(IRIS.feature_names, map(float, row), strict=True))]} for row in IRIS_ROWS[:6]]
    return [
        *[("post", "/iris", {"json": body}) for body in iris],
        ("post", "/kobe", {"json": json.loads((EXAMPLES / "kobe.json").read_text())}),
        ("post", "/digits", {"files": [("images", ("digit.png", (EXAMPLES / "digit.png").read_bytes(), "image/png"))]}),
        ("post", "/digits/pixels", {"json": json.loads((EXAMPLES / "digits-pixels.json").read_text())}),
        ("post", "/malaria", {"files": [("images", (p.name, p.read_bytes(), "image/png")) for p in cells]}),
        ("post", "/malaria/base64", {"json": {"images": [base64.b64encode(cells[0].read_bytes()).decode()]}}),
        ("post", "/v2/models/iris/infer", {"json": json.loads((EXAMPLES / "v2-iris.json").read_text())}),
        ("post", "/iris", {"json": {"records": [{"sepal_length": "x"}]}}),  # a 400 stays the same 400
    ]


def test_answers_are_the_same_bytes_with_the_shadow_on_and_off(server, shadowed_server, malaria_image_paths):
    for method, path, kwargs in calls(malaria_image_paths):
        plain = requests.request(method, server.url + path, timeout=30, **kwargs)
        shadowed = requests.request(method, shadowed_server.url + path, timeout=30, **kwargs)
        assert (shadowed.status_code, shadowed.content) == (plain.status_code, plain.content), path
    assert "Traceback" not in shadowed_server.log.read_text()


def handled(report: dict) -> int:
    return report["requests_compared"] + report["shed"] + report["errors"]


def wait_for(url: str, requests_handled: int) -> dict:
    """The report once the shadow has handled (compared, shed or failed) that many requests."""
    for _ in range(100):
        report = requests.get(url, timeout=10).json()
        if handled(report) >= requests_handled:
            return report
        time.sleep(0.05)
    raise AssertionError(f"the shadow never handled {requests_handled} requests: {report}")


def settled(url: str) -> dict:
    """The report once nothing sent earlier is still waiting for the shadow (it gathers for 0.1 s)."""
    report = requests.get(url, timeout=10).json()
    for _ in range(50):
        time.sleep(0.3)
        again = requests.get(url, timeout=10).json()
        if handled(again) == handled(report):
            return again
        report = again
    raise AssertionError(f"the shadow never settled: {report}")


def test_the_report_matches_both_models_called_directly(shadowed_server, quick_models, challengers):
    url = f"{shadowed_server.url}/models/iris/shadow"
    before = settled(url)
    for row in IRIS_ROWS:  # one at a time: the champion idles between them, so nothing is shed
        body = {"records": [dict(zip(IRIS.feature_names, map(float, row), strict=True))]}
        assert requests.post(f"{shadowed_server.url}/iris", json=body, timeout=10).status_code == 200
        time.sleep(0.02)
    report = wait_for(url, handled(before) + len(IRIS_ROWS))
    assert report["shed"] == before["shed"] and report["errors"] == 0
    assert report["champion"] == quick_models["iris"].tag and report["challenger"] == challengers["iris"].tag

    # The report is cumulative: our rows' share of each number is the change since `before`.
    a = direct_probabilities(report["champion"], IRIS_ROWS)
    b = direct_probabilities(report["challenger"], IRIS_ROWS)
    rows, n_classes = len(IRIS_ROWS), len(IRIS.class_names)
    assert report["rows_compared"] - before["rows_compared"] == rows

    def total(r, key, scale):
        return (r[key] or 0.0) * r["rows_compared"] * scale

    agreeing = total(report, "label_agreement", 1) - total(before, "label_agreement", 1)
    assert agreeing == pytest.approx((a.argmax(1) == b.argmax(1)).sum(), abs=1e-6)
    differences = total(report, "mean_abs_diff", n_classes) - total(before, "mean_abs_diff", n_classes)
    assert differences == pytest.approx(np.abs(a - b).sum(), rel=1e-6, abs=1e-6)
    assert report["max_abs_diff"] >= np.abs(a - b).max() - 1e-6
    for role, probabilities in (("champion", a), ("challenger", b)):
        added = {n: report["class_distribution"][role][n] - before["class_distribution"][role][n]
                 for n in IRIS.class_names}
        assert added == {n: int((probabilities.argmax(1) == i).sum()) for i, n in enumerate(IRIS.class_names)}
    assert report["latency_ms"]["champion"]["p50"] > 0 and report["latency_ms"]["challenger"]["p99"] > 0


def test_models_and_metrics_show_the_shadow(shadowed_server, challengers):
    listed = {m["name"]: m for m in requests.get(f"{shadowed_server.url}/models", timeout=10).json()["models"]}
    assert {name: m["shadow"] for name, m in listed.items()} == {n: r.tag for n, r in challengers.items()}
    requests.post(f"{shadowed_server.url}/iris", timeout=10,
                  json={"records": [dict(zip(IRIS.feature_names, [5.0, 3.0, 1.5, 0.2], strict=True))]})
    wait_for(f"{shadowed_server.url}/models/iris/shadow", 1)
    metrics = requests.get(f"{shadowed_server.url}/metrics", timeout=10).text
    assert 'model_shadow_requests_total{model="iris",outcome="compared"}' in metrics
    assert 'model_shadow_label_agreement{model="iris"}' in metrics
    series = {line.split("{")[0] for line in metrics.splitlines() if line.startswith("model_shadow")}
    labels = {line.split("{")[1].split("}")[0] for line in metrics.splitlines() if line.startswith("model_shadow")}
    assert all(label.count("=") <= 2 for label in labels), "model and one bounded label at most"
    assert series, metrics[:500]


def test_without_shadowing_the_route_is_a_404_with_the_error_body(server):
    answer = requests.get(f"{server.url}/models/iris/shadow", timeout=10)
    assert answer.status_code == 404
    assert "IRIS_SHADOW_VERSION" in answer.json()["error"]
    assert requests.get(f"{server.url}/models/nosuch/shadow", timeout=10).status_code == 404
    assert all(m["shadow"] is None for m in requests.get(f"{server.url}/models", timeout=10).json()["models"])
