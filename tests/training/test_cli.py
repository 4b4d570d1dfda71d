"""The command line, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


def private_store(tmp_path: Path) -> dict[str, str]:
    """A BentoML store and an MLflow database of the test's own. MLFLOW_TRACKING_URI is set
    too: mlflow.set_tracking_uri() in this process exports the session's to children."""
    state = tmp_path / "state"
    return {"BENTOML_HOME": str(tmp_path / "bentoml"), "STATE_DIR": str(state),
            "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}"}


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_quick_run_prints_a_summary_and_only_missing_skips_it(settings):
    done = run_cli("iris", "--quick")
    assert done.returncode == 0, done.stderr
    assert "iris" in done.stdout and "pass" in done.stdout and "accuracy=" in done.stdout
    again = run_cli("iris", "--quick", "--only-missing")
    assert again.returncode == 0
    assert "nothing to train" in again.stderr


def test_only_missing_retrains_a_model_trained_under_an_older_spec(tmp_path):
    """A stored model the service would refuse (stale spec fingerprint) counts as missing."""
    store = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    stale = ("import bentoml; from sklearn.datasets import load_iris; "
             "from sklearn.linear_model import LogisticRegression; "
             "bentoml.sklearn.save_model('iris', LogisticRegression().fit(*load_iris(return_X_y=True)), "
             "metadata={'spec_fingerprint': 'older'})")
    subprocess.run([sys.executable, "-c", stale], check=True, env={**os.environ, **store}, timeout=120)
    done = run_cli("iris", "--quick", "--only-missing", env=store)
    assert done.returncode == 0, done.stderr
    assert "nothing to train" not in done.stderr
    assert "iris" in done.stdout and "pass" in done.stdout
    again = run_cli("iris", "--quick", "--only-missing", env=store)
    assert "nothing to train" in again.stderr


def test_missing_data_file_fails_with_a_clear_message(tmp_path):
    # An empty data folder: the download is attempted and (offline) fails, or succeeds
    # on a machine with network; either way the command must say what it did.
    done = run_cli("kobe", "--data-dir", str(tmp_path), timeout=120)
    if done.returncode == 0:
        pytest.skip("this machine could download the kobe data; the offline error is not reachable")
    assert "kobe/dataset_kobe_dev.parquet" in done.stderr
    assert "DATA_DIR" in done.stderr
    assert "Traceback" not in done.stderr
    assert "ERROR" in done.stdout


def test_unknown_model_is_a_usage_error():
    done = run_cli("resnet")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_a_smoke_run_never_reaches_production(tmp_path):
    """A quick model is stored as quick, never registered, never served or built unless
    pinned by its exact version, and never makes `--only-missing` skip the full model."""
    from mlflow import MlflowClient

    store = private_store(tmp_path)
    store.update({f"{name.upper()}_MODEL_VERSION": "" for name in ("digits", "iris", "kobe", "malaria")})
    bentoml_cli = [str(Path(sys.executable).with_name("bentoml"))]
    served = [sys.executable, "-c", "from service.versions import served_tag; print(served_tag('iris'))"]

    smoke = run_cli("iris", "--quick", env=store)
    assert smoke.returncode == 0, smoke.stderr
    quick_tag = next(word for word in smoke.stdout.split() if word.startswith("iris:"))
    assert quick_tag.startswith("iris:quick-")
    listed = subprocess.run([*bentoml_cli, "models", "list"], capture_output=True, text=True,
                            env={**os.environ, **store}, timeout=120)
    assert quick_tag in listed.stdout, listed.stdout + listed.stderr
    uri = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the session's registry
    assert client.search_model_versions("name='iris'") == [], "a smoke run is no production candidate"

    refused = subprocess.run(served, capture_output=True, text=True, env={**os.environ, **store}, timeout=120)
    assert refused.returncode != 0
    assert "no full iris model" in refused.stderr and f"IRIS_MODEL_VERSION={quick_tag.split(':')[1]}" in refused.stderr
    build = subprocess.run([*bentoml_cli, "build", "-o", "tag", str(PROJECT)], capture_output=True, text=True,
                           env={**os.environ, **store}, timeout=300, cwd=PROJECT)
    assert build.returncode != 0 and "no full iris model" in build.stdout + build.stderr

    full = run_cli("iris", "--only-missing", env=store)
    assert "nothing to train" not in full.stderr and full.returncode == 0, full.stderr
    full_tag = next(word for word in full.stdout.split() if word.startswith("iris:"))
    assert not full_tag.startswith("iris:quick-")
    assert len(client.search_model_versions("name='iris'")) == 1
    newer_smoke = run_cli("iris", "--quick", env=store)
    assert newer_smoke.returncode == 0, newer_smoke.stderr

    chosen = subprocess.run(served, capture_output=True, text=True, env={**os.environ, **store}, timeout=120)
    assert chosen.stdout.strip() == full_tag, chosen.stderr
    pinned = {**store, "IRIS_MODEL_VERSION": quick_tag.split(":")[1]}
    chosen = subprocess.run(served, capture_output=True, text=True, env={**os.environ, **pinned}, timeout=120)
    assert chosen.stdout.strip() == quick_tag, chosen.stderr
