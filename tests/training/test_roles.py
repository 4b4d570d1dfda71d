"""Champion and challenger across both stores, through the command line, in a private
BentoML store and MLflow database (real ones)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.training.test_cli import private_store, run_cli

PINS = {f"{name.upper()}_MODEL_VERSION": "" for name in ("digits", "iris", "kobe", "malaria")}


FAIL_HALFWAY = """
from training import roles
from training.settings import Settings
calls = []
real = roles._write_labels
def second_write_fails(model, labels):
    calls.append(model)
    if len(calls) == 2:
        raise RuntimeError("disk full")
    real(model, labels)
roles._write_labels = second_write_fails
roles.promote(Settings.from_env(), "iris")
"""
"""A promotion whose second label write fails: everything must be put back."""


@pytest.fixture()
def store(tmp_path):
    return {**private_store(tmp_path), **PINS}


def trained_tag(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return next(word for word in result.stdout.split() if word.startswith("iris:"))


def labels(store: dict, tag: str) -> dict:
    path = Path(store["BENTOML_HOME"]) / "models" / "iris" / tag.split(":")[1] / "model.yaml"
    return yaml.safe_load(path.read_text())["labels"]


def both_stores(store: dict) -> tuple[dict, dict]:
    """(roles by the BentoML labels, roles by MLflow's aliases), each role -> BentoML tag."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{Path(store['STATE_DIR']) / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the session's registry
    by_run = {v.run_id: v.version for v in client.search_model_versions("name='iris'")}
    bento, mlflow = {}, {}
    for folder in (Path(store["BENTOML_HOME"]) / "models" / "iris").iterdir():
        if folder.is_dir():
            info = yaml.safe_load((folder / "model.yaml").read_text())
            tag = f"iris:{folder.name}"
            if role := info["labels"].get("role"):
                bento[role] = tag
            version = by_run.get(info["metadata"]["mlflow_run_id"])
            for alias in client.get_registered_model("iris").aliases:
                if client.get_registered_model("iris").aliases[alias] == version:
                    mlflow[alias] = tag
    return bento, mlflow


def served(store: dict) -> str:
    code = "from service.versions import served_tag; print(served_tag('iris'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **store}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def status(store: dict) -> dict:
    done = run_cli("status", "iris", "--json", env=store)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["iris"]


def test_first_model_is_champion_then_challenger_promote_and_rollback_keep_both_stores_in_step(store):
    first = trained_tag(run_cli("iris", env=store))
    assert both_stores(store) == ({"champion": first}, {"champion": first})
    assert status(store)["champion"] == first and status(store)["challenger"] is None
    assert served(store) == first

    second = trained_tag(run_cli("iris", "--seed", "7", env=store))  # as good: accepted
    assert both_stores(store) == ({"champion": first, "challenger": second},) * 2
    assert served(store) == first, "a challenger is not served"
    report = status(store)
    assert (report["champion"], report["challenger"], report["in_step"]) == (first, second, True)
    assert set(report["challenger_metrics"]) >= {"accuracy", "log_loss"}

    failing = subprocess.run([sys.executable, "-c", FAIL_HALFWAY], capture_output=True, text=True,
                             env={**os.environ, **store}, timeout=120)
    assert "RuntimeError: disk full" in failing.stderr, failing.stderr
    assert both_stores(store) == ({"champion": first, "challenger": second},) * 2, "put back as it was"
    assert "retired_at" not in labels(store, first) and "promoted_at" not in labels(store, second)

    promoted = run_cli("promote", "iris", env={**store, "PROMOTED_BY": "release-bot"})
    assert promoted.returncode == 0 and second in promoted.stdout, promoted.stderr
    assert both_stores(store) == ({"champion": second},) * 2
    assert served(store) == second
    report = status(store)
    assert report["promoted_by"] == "release-bot" and report["previous_champion"] == first
    assert "retired_at" in labels(store, first)

    rolled = run_cli("rollback", "iris", env=store)
    assert rolled.returncode == 0 and first in rolled.stdout, rolled.stderr
    assert both_stores(store) == ({"champion": first},) * 2
    assert served(store) == first
    assert "rolled_back_at" in labels(store, second)

    again = run_cli("promote", "iris", second.split(":")[1], env=store)  # by version
    assert again.returncode == 0, again.stderr
    assert both_stores(store) == ({"champion": second},) * 2
    pinned = {**store, "IRIS_MODEL_VERSION": first.split(":")[1]}
    assert served(pinned) == first, "a pin still wins"


def test_refusals_change_nothing(store):
    first = trained_tag(run_cli("iris", env=store))
    smoke = trained_tag(run_cli("iris", "--quick", env=store))
    before = both_stores(store)
    for args, says in ((("promote", "iris"), "no challenger"),
                       (("promote", "iris", smoke.split(":")[1]), "quick"),
                       (("promote", "iris", "nosuchversion"), "no iris:nosuchversion"),
                       (("promote", "iris", first.split(":")[1]), "already the champion"),
                       (("rollback", "iris"), "no previous champion")):
        refused = run_cli(*args, env=store)
        assert refused.returncode == 1 and says in refused.stderr, (args, refused.stderr)
        assert both_stores(store) == before
    assert "role" not in labels(store, smoke)
