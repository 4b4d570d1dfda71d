"""Two `bentoml serve` on one BENTOML_HOME keep their own metrics (service/patches.py,
own_metrics_folder): BentoML 1.4.39 emptied the shared Prometheus folder as the second
started, wiping the first one's counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from loadtests.server import Server as PlainServer
from tests.servers import Server
from tests.service.metrics import request_counts

pytestmark = pytest.mark.slow

IRIS = {"records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}


def test_a_second_server_on_the_same_home_leaves_the_first_ones_metrics(quick_models):
    first = Server()
    second = None
    try:
        first.wait("/readyz")
        for _ in range(3):
            assert requests.post(f"{first.url}/iris", json=IRIS).status_code == 200
        assert request_counts(first.url)[("/iris", 200)] == 3
        home = Path(first.log.parent) / "bentoml-home"
        second = PlainServer({"BENTOML_HOME": str(home)}, log=first.log.parent / "second.log")
        second.wait("/readyz")
        assert requests.post(f"{second.url}/iris", json=IRIS).status_code == 200
        assert request_counts(first.url)[("/iris", 200)] == 3, "the first server's counts survive"
        assert request_counts(second.url)[("/iris", 200)] == 1, "and the second counts its own"
        folders = sorted(p.name for p in (home / "prometheus_multiproc_dir").iterdir())
        assert folders == sorted([str(first.pid), str(second.pid)]), folders
    finally:
        for server in (second, first):
            if server is not None:
                server.stop()
