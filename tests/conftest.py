"""Test session set-up: private BentoML and MLflow stores, and the real data directory.

The stores live in a temporary folder so tests never touch a user's models. Environment
variables are set in pytest_configure, before any test module imports bentoml (BentoML
reads BENTOML_HOME once, at import).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Server

_SESSION_ROOT: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_ROOT
    _SESSION_ROOT = Path(tempfile.mkdtemp(prefix="serving-tests-"))
    os.environ["BENTOML_HOME"] = str(_SESSION_ROOT / "bentoml")
    os.environ["STATE_DIR"] = str(_SESSION_ROOT / "state")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_ROOT is not None:
        shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def settings():
    """Settings for the test session; DATA_DIR must hold the real data (see README)."""
    from training.settings import Settings

    settings = Settings.from_env()
    needed = ["kobe/dataset_kobe_dev.parquet", "kobe/dataset_kobe_prod.parquet",
              "malaria/cell_images/Parasitized", "malaria/cell_images/Uninfected"]
    missing = [n for n in needed if not (settings.data_dir / n).exists()]
    if missing:
        pytest.fail(f"DATA_DIR={settings.data_dir} lacks {missing}: point DATA_DIR at the real data "
                    "(for example ../shared/data)", pytrace=False)
    return settings


@pytest.fixture(scope="session")
def quick_models(settings):
    """Every model trained once on a small real subset and saved to the session's store.

    Quick models are served and built only when pinned by their exact version
    (service/versions.py): the session pins them, as a user serving a smoke run would."""
    from service.specs import SPECS
    from training.pipeline import train_model

    results = {name: train_model(name, settings, quick=True) for name in SPECS}
    failed = {name: r.gate_failures for name, r in results.items() if not r.passed}
    assert not failed, f"quick models failed their lenient gates: {failed}"
    for name, result in results.items():
        os.environ[f"{name.upper()}_MODEL_VERSION"] = result.tag.split(":", 1)[1]
    return results


@pytest.fixture(scope="session")
def challengers(quick_models, settings):
    """A second quick model of every name (another seed): the shadows of shadowed_server."""
    from dataclasses import replace

    from service.specs import SPECS
    from training.pipeline import train_model

    results = {name: train_model(name, replace(settings, seed=7), quick=True) for name in SPECS}
    assert all(r.passed for r in results.values()), {n: r.gate_failures for n, r in results.items()}
    return results


@pytest.fixture(scope="session")
def shadowed_server(challengers) -> Iterator[Server]:
    """The service over the session's quick models, each shadowed by its challenger."""
    env = {f"{name.upper()}_SHADOW_VERSION": result.tag.split(":", 1)[1] for name, result in challengers.items()}
    server = Server(env)
    try:
        server.wait("/readyz")
        yield server
    finally:
        server.stop()


class KeyedServer(Server):
    """A server with API keys on: one key per scope, and one with all three."""

    KEYS = {"all": "predict,read,metrics", "predictor": "predict", "reader": "read", "scraper": "metrics"}

    def __init__(self, folder: Path) -> None:
        from service.keys import line_for

        self.api_keys = {name: f"test-key-{name}-{os.urandom(8).hex()}" for name in self.KEYS}
        self.keys_file = folder / "api-keys"
        self.keys_file.write_text("".join(f"{line_for(name, scopes.split(','), self.api_keys[name])}\n"
                                          for name, scopes in self.KEYS.items()))
        super().__init__({"API_KEYS_FILE": str(self.keys_file), "REQUIRE_API_KEYS": "1"})

    def auth(self, name: str = "all") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_keys[name]}"}


@pytest.fixture(scope="session")
def keyed_server(quick_models, tmp_path_factory) -> Iterator[KeyedServer]:
    """The service over the session's quick models with API keys required."""
    server = KeyedServer(tmp_path_factory.mktemp("keys"))
    try:
        server.wait("/readyz")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def malaria_image_paths(settings) -> dict[str, list[Path]]:
    """A few real cell images of each class."""
    root = settings.data_dir / "malaria" / "cell_images"
    return {c: sorted((root / c).glob("*.png"))[:40] for c in ("Parasitized", "Uninfected")}


@pytest.fixture(scope="session")
def server(quick_models) -> Iterator[Server]:
    """The service over the session's quick models on a free port, ready (every model warmed up)."""
    server = Server()
    try:
        server.wait("/readyz")
        yield server
    finally:
        server.stop()
