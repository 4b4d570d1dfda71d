"""A fifth model is its spec and its trainer: docs/adding-a-model.md's code blocks, applied
as written to a copy of the project, give a model that trains, serves, answers on its
typed route and V2, appears in /models, /docs.json and /metrics, has drift monitoring,
scores in the batch CLI and gets load from the load test, with nothing else edited."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.servers import Server

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
GUIDE = PROJECT / "docs" / "adding-a-model.md"


def guide_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)


def define_before_registry(path: Path, definition: str, registry_line: str) -> None:
    """Put `definition` above the registry line it extends, and that line in its place."""
    name = registry_line.split(":")[0]
    lines = path.read_text().splitlines(keepends=True)
    (index,) = [i for i, line in enumerate(lines) if line.startswith(f"{name}:")]
    lines[index:index + 1] = [definition, "\n\n", registry_line]
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def project_with_wine(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("five") / "project"
    ignore = shutil.ignore_patterns("__pycache__", ".venv", ".state", "*.egg-info")
    for part in ("service", "training", "loadtests"):
        shutil.copytree(PROJECT / part, copy / part, ignore=ignore)
    shutil.copy(PROJECT / "bentofile.yaml", copy / "bentofile.yaml")
    spec, spec_registry, trainer, trainer_registry = guide_blocks("python")
    define_before_registry(copy / "service" / "specs.py", spec, spec_registry)
    define_before_registry(copy / "training" / "trainers.py", trainer, trainer_registry)
    return copy


def run(copy: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=copy, env={**os.environ, "PYTHONPATH": str(copy)},
                          capture_output=True, text=True, timeout=timeout)


def guide_record() -> dict:
    """The /wine request body of the guide's curl example."""
    (body,) = re.findall(r"-d '(.*?)'", "".join(guide_blocks("bash")), re.S)
    return json.loads(body)["records"][0]


def test_a_fifth_model_from_its_spec_and_trainer_trains_serves_and_answers(quick_models, project_with_wine,
                                                                             settings, tmp_path):
    import bentoml

    copy = project_with_wine
    trained = run(copy, "-m", "training", "wine", "--quick")
    assert trained.returncode == 0, trained.stderr[-3000:]
    (wine,) = [m for m in bentoml.models.list("wine")]
    record = guide_record()
    server = Server(env={"PYTHONPATH": str(copy), "WINE_MODEL_VERSION": wine.tag.version}, project=copy)
    try:
        server.wait("/readyz")
        typed = requests.post(f"{server.url}/wine", json={"records": [record]}, timeout=10)
        assert typed.status_code == 200, typed.text
        (answer,) = typed.json()["predictions"]
        assert answer["model"] == str(wine.tag) and answer["label"] in ("cultivar_1", "cultivar_2", "cultivar_3")

        names = [f["name"] for f in requests.get(f"{server.url}/models").json()["models"][-1]["features"]]
        v2 = requests.post(f"{server.url}/v2/models/wine/infer", timeout=10, json={"inputs": [
            {"name": "input", "datatype": "FP64", "shape": [1, 13], "data": [record[n] for n in names]}]})
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == [answer["label"]]
        assert requests.get(f"{server.url}/v2/models/wine").json()["platform"] == "sklearn"

        models = {m["name"]: m for m in requests.get(f"{server.url}/models").json()["models"]}
        assert list(models) == ["digits", "iris", "kobe", "malaria", "wine"]
        assert models["wine"]["endpoints"] == ["/wine"] and models["wine"]["tag"] == str(wine.tag)

        refused = requests.post(f"{server.url}/wine", json={"records": [{**record, "hue": -1}]})
        assert refused.status_code == 400 and "hue" in refused.text and refused.json()["error"]
        wrong_type = requests.post(f"{server.url}/wine", data="{}", headers={"content-type": "text/plain"})
        assert wrong_type.status_code == 415

        drift = requests.get(f"{server.url}/models/wine/drift")
        assert drift.status_code == 200 and drift.json()["model"] == "wine"
        assert [f["name"] for f in drift.json()["features"]] == names
        assert "/wine" in requests.get(f"{server.url}/docs.json").json()["paths"]
        assert 'model_batch_rows_count{model="wine"}' in requests.get(f"{server.url}/metrics").text

        locust = Path(sys.executable).with_name("locust")
        prefix = tmp_path / "load"
        load = subprocess.run(
            [str(locust), "-f", "loadtests/locustfile.py", "--headless", "--host", server.url, "--users", "2",
             "--spawn-rate", "2", "--run-time", "8s", "--csv", str(prefix), "SchemaUser"],
            cwd=copy, capture_output=True, text=True, timeout=120,
            env={**os.environ, "DATA_DIR": str(settings.data_dir), "LOADTEST_P99_SCALE": "10"})
        assert load.returncode == 0, load.stdout[-3000:] + load.stderr[-3000:]
        with open(f"{prefix}_stats.csv") as handle:
            counts = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(handle)}
        assert counts.get("/wine", 0) > 0, counts
    finally:
        server.stop()

    rows = tmp_path / "wine.csv"
    rows.write_text(",".join(names) + "\n" + ",".join(str(record[n]) for n in names) + "\n")
    scored = run(copy, "-m", "service.batch", "wine", str(rows), str(tmp_path / "out.csv"),
                 "--version", str(wine.tag.version))  # a quick model: scored only when asked for by version
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert (tmp_path / "out.csv").read_text().splitlines()[1].split(",")[1] == answer["label"]
    bentoml.models.delete(wine.tag)
