"""The malaria ceiling benchmark's trivial-model store: the part of
loadtests/compare/malaria_ceiling.py that follows the training and versions APIs (it
broke once when they changed and nothing ran it). Its load, minutes of wrk, is not run here."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import requests
import yaml

from tests.servers import Server

pytestmark = pytest.mark.slow


def test_the_ceiling_store_serves_a_trivial_malaria_with_the_served_versions_metadata(quick_models, settings, tmp_path):
    from loadtests.compare.malaria_ceiling import trivial_store

    source = Path(os.environ["BENTOML_HOME"])
    served = quick_models["malaria"].tag.split(":", 1)[1]  # the session pins it: what the source serves
    tag = trivial_store(source, tmp_path / "store")
    name, version = tag.split(":", 1)
    assert name == "malaria" and version != served
    trivial = yaml.safe_load((tmp_path / "store" / "models" / "malaria" / version / "model.yaml").read_text())
    original = yaml.safe_load((source / "models" / "malaria" / served / "model.yaml").read_text())
    assert trivial["labels"]["role"] == "champion"
    assert trivial["metadata"]["trivial"] is True
    assert trivial["metadata"]["spec_fingerprint"] == original["metadata"]["spec_fingerprint"]
    assert trivial["metadata"]["litert"]["litert_sha256"] != original["metadata"]["litert"]["litert_sha256"]

    server = Server({"BENTOML_HOME": str(tmp_path / "store"), "MALARIA_MODEL_VERSION": version})
    try:
        server.wait("/readyz")
        first = sorted((settings.data_dir / "malaria" / "cell_images" / "Parasitized").glob("*.png"))[0]
        cell = base64.b64encode(first.read_bytes()).decode()
        answer = requests.post(f"{server.url}/malaria/base64", json={"images": [cell]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["model"] == tag
    finally:
        server.stop()
