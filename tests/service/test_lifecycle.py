"""Start-up, readiness and model-version selection of real `bentoml serve` processes."""

from __future__ import annotations

import os
import time

import pytest
import requests

from service.specs import SPECS
from tests.servers import Server

pytestmark = pytest.mark.slow


def test_readyz_turns_ready_once_and_then_every_model_answers(quick_models):
    """From the first moment the server answers, /readyz is 503 until it is 200 (never back),
    and once it is 200 every model is listed. (The 503 window itself is tested without a
    server in tests/unit/test_loading.py: quick models load in about 0.1 s, often before
    the first probe.)"""
    server = Server()
    try:
        server.wait("/livez")
        seen = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"{server.url}/readyz", timeout=5).status_code
            except requests.RequestException:  # busy loading: ask again
                continue
            seen.append(status)
            if status == 200:
                break
            time.sleep(0.05)
        assert seen[-1] == 200 and set(seen[:-1]) <= {503}, seen
        assert all(requests.get(f"{server.url}/readyz").status_code == 200 for _ in range(5))
        models = requests.get(f"{server.url}/models").json()["models"]
        assert [m["name"] for m in models] == list(SPECS)
    finally:
        server.stop()


def test_model_version_is_chosen_by_environment(quick_models, settings):
    import bentoml

    from training.pipeline import train_model

    session_pin = quick_models["iris"].tag
    pinned = train_model("iris", settings, quick=True).tag
    session_default = bentoml.models.get(f"iris:{os.environ['IRIS_MODEL_VERSION']}").tag
    assert pinned != session_pin and str(session_default) == session_pin
    server = Server(env={"IRIS_MODEL_VERSION": pinned.split(":")[1]})
    try:
        server.wait("/readyz")
        tags = {m["name"]: m["tag"] for m in requests.get(f"{server.url}/models").json()["models"]}
        assert tags["iris"] == pinned
        answer = requests.post(f"{server.url}/iris", json={"records": [
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]})
        assert answer.json()["predictions"][0]["model"] == pinned
    finally:
        server.stop()


def test_a_model_trained_for_another_schema_is_refused(quick_models):
    """The service never serves a model whose input schema differs from the spec."""
    import bentoml

    original = bentoml.models.get(quick_models["iris"].tag)
    metadata = {**original.info.metadata, "spec_fingerprint": "0" * 16}
    stale = bentoml.sklearn.save_model("iris", bentoml.sklearn.load_model(original), metadata=metadata)
    server = Server(env={"IRIS_MODEL_VERSION": stale.tag.version})
    try:
        server.wait("/livez")
        deadline = time.monotonic() + 120
        while "different iris input schema" not in (refused := requests.get(f"{server.url}/models")).text:
            assert time.monotonic() < deadline, refused.text
            time.sleep(0.2)
        assert refused.status_code == 503
        assert requests.get(f"{server.url}/readyz").status_code == 503
        predict = requests.post(f"{server.url}/iris", json={"records": [
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]})
        assert predict.status_code == 503 and "different iris input schema" in predict.json()["error"]
    finally:
        server.stop()
        bentoml.models.delete(stale.tag)


def test_the_running_server_loads_no_tensorflow_keras_or_scikit_learn(server):
    """The CNN runs from its LiteRT file and the other three from their arrays: no process
    of the server maps TensorFlow, Keras, scikit-learn or SciPy (seconds of start-up)."""
    from pathlib import Path

    from loadtests.server import descendants

    processes = [server.pid, *descendants(server.pid)]
    assert len(processes) >= 2, "expected the arbiter and at least one worker"
    mapped = {line.split()[-1] for pid in processes
              for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/" in line}
    assert any("ai_edge_litert" in path for path in mapped), "the LiteRT runtime is not loaded"
    heavy = ("tensorflow", "keras", "sklearn", "scipy")
    assert not [path for path in mapped if any(f"/site-packages/{package}" in path for package in heavy)]


def test_a_worker_killed_with_sigkill_is_replaced_and_answers_right(quick_models):
    """The arbiter restarts a worker that died hard; the new one loads every model again and
    answers exactly as before. The recovery time goes to the log (docs/benchmarks.md)."""
    import os
    import signal
    from pathlib import Path

    from loadtests.server import descendants

    record = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}
    server = Server()
    try:
        server.wait("/readyz")
        before = requests.post(f"{server.url}/iris", json={"records": [record]}, timeout=10).json()
        (worker,) = [pid for pid in descendants(server.pid)
                     if "_bentoml_impl.worker" in Path(f"/proc/{pid}/cmdline").read_text()]
        killed = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        deadline = killed + 120
        while time.monotonic() < deadline:
            try:
                pids = descendants(server.pid)
                if worker not in pids and requests.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass  # no worker listening for a moment
            time.sleep(0.05)
        else:
            raise AssertionError("no ready worker 120 s after SIGKILL")
        print(f"ready again {time.monotonic() - killed:.1f} s after SIGKILL of the worker")
        after = requests.post(f"{server.url}/iris", json={"records": [record]}, timeout=10).json()
        assert after == before
        assert server.process.poll() is None, "the arbiter must survive its worker"
    finally:
        server.stop()
