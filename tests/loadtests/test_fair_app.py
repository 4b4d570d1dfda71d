"""The comparator app of the benchmarks (loadtests/compare/fastapi_app.py) answers every
route it serves with the service's probabilities: a comparison of equals."""

from __future__ import annotations

import base64
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fair_app(quick_models):
    from fastapi.testclient import TestClient

    sys.path.insert(0, str(PROJECT / "loadtests" / "compare"))
    try:
        yield TestClient(importlib.import_module("fastapi_app").app)
    finally:
        sys.path.remove(str(PROJECT / "loadtests" / "compare"))


def probabilities(answer) -> np.ndarray:
    assert answer.status_code == 200, answer.text[:300]
    return np.array([list(p["probabilities"].values()) for p in answer.json()["predictions"]])


def test_every_route_gives_the_services_probabilities(fair_app, server, settings, malaria_image_paths):
    raw = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").head(20)
    cells = [base64.b64encode(p.read_bytes()).decode() for p in malaria_image_paths["Parasitized"][:4]]
    bodies = {
        "/iris": {"records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
                              {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}]},
        "/kobe": {"records": json.loads(raw.to_json(orient="records"))},
        "/digits/pixels": {"pixels": [[float(i % 17) for i in range(64)]]},
        "/malaria/base64": {"images": cells},
    }
    for route, body in bodies.items():
        ours = probabilities(requests.post(server.url + route, json=body, timeout=30))
        theirs = probabilities(fair_app.post(route, json=body))
        np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-9, err_msg=route)
