"""The command line, as a user runs it."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


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
