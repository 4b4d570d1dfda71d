"""Readiness (service/loading.py): not ready, with the reason, until every model of the
registry is loaded and warmed up; then every model answers, by name and version."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

from service import loading
from service.errors import NotFound, NotReady
from service.runtime import ServedModel
from service.specs import SPECS

LAST = list(SPECS)[-1]


class Refs:
    """Stands in for the service class: one model reference per spec."""

    def __init__(self) -> None:
        for name in SPECS:
            setattr(self, loading.ref_attribute(name), f"ref of {name}")


class Instruments:
    def observe_batch(self, model: str, requests: int, rows: int) -> None: ...


def served(spec) -> ServedModel:
    classes = len(spec.class_names)
    return ServedModel(spec, f"{spec.name}:v1", {}, lambda rows: np.full((len(rows), classes), 1 / classes), "arrays")


def wait_for(condition) -> None:
    """Until condition() holds (a hang fails the test through pytest's timeout)."""
    while not condition():
        time.sleep(0.01)


@pytest.fixture
def models(monkeypatch):
    monkeypatch.setenv("DRIFT_WINDOW", "0")  # no Prometheus gauges in the test process
    monkeypatch.setattr(loading, "warm_up", lambda model: None)
    yield lambda: loading.ServedModels(Refs(), Instruments())  # type: ignore[arg-type]
    gc.unfreeze()


def test_not_ready_until_the_last_model_is_loaded_then_every_model_answers(models, monkeypatch):
    last_started, release = threading.Event(), threading.Event()

    def load(spec, ref, threads):
        assert ref == f"ref of {spec.name}"
        if spec.name == LAST:
            last_started.set()
            release.wait(timeout=60)
        return served(spec)

    monkeypatch.setattr(loading, "load", load)
    loaded = models()
    loaded.start_loading()
    assert last_started.wait(timeout=60)
    assert not loaded.ready
    with pytest.raises(NotReady, match="still loading"):
        loaded.batcher("iris")
    with pytest.raises(NotReady):
        loaded.all()
    with pytest.raises(NotFound, match="unknown model 'resnet'"):
        loaded.batcher("resnet")
    release.set()
    wait_for(lambda: loaded.ready)
    assert [batcher.model.spec.name for batcher in loaded.all()] == list(SPECS)
    assert loaded.batcher("iris", "v1").model.tag == "iris:v1"
    with pytest.raises(NotFound, match="no version 'v2'"):
        loaded.batcher("iris", "v2")
    with pytest.raises(NotFound, match="monitoring is off"):
        loaded.drift("iris")


def test_a_failed_load_is_the_reason_every_503_gives(models, monkeypatch):
    def load(spec, ref, threads):
        if spec.name == LAST:
            raise RuntimeError(f"{spec.name}:v1 was trained for a different input schema: retrain it")
        return served(spec)

    monkeypatch.setattr(loading, "load", load)
    loaded = models()
    loaded.start_loading()
    wait_for(lambda: "different input schema" in loaded.not_ready_reason())
    assert not loaded.ready
    with pytest.raises(NotReady, match="RuntimeError: .* retrain it"):
        loaded.batcher("iris")
