"""Every "run" command of the docs (tests/documented.py), exactly as written, from the
project root, against the service on 127.0.0.1:3000 (the port the docs use): each must
exit 0, and a JSON answer must not be an error."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from tests.documented import DOCUMENTS, PROJECT, commands, python_examples, rule_for
from tests.servers import Server

pytestmark = pytest.mark.slow

DOCS_PORT = 3000
LOCUST_SHORT = {"LOCUST_RUN_TIME": "10s", "LOCUST_USERS": "4", "LOCUST_SPAWN_RATE": "4",
                "LOADTEST_P99_SCALE": "10"}
"""The documented locust command, shortened through locust's own variables (they
override its config file; the command line stays as written): CI shares 2 cores."""


@pytest.fixture(scope="module")
def docs_server(quick_models, challengers) -> Iterator[Server]:
    """The README's server, with malaria shadowed (README's shadow report request)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", DOCS_PORT)) == 0:
            pytest.fail(f"port {DOCS_PORT} is taken: the documented commands need it for the service", pytrace=False)
    server = Server({"MALARIA_SHADOW_VERSION": challengers["malaria"].tag.split(":", 1)[1]}, port=DOCS_PORT)
    try:
        server.wait("/readyz")
        yield server
    finally:
        server.stop()


def run_as_written(prefix: list[str], command: str) -> subprocess.CompletedProcess[str]:
    script = "\n".join(["set -e", *prefix, command])
    return subprocess.run(["bash", "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **LOCUST_SHORT})


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_documented_command_runs_as_written(docs_server, document):
    ran = 0
    for block in sorted({c.block for c in commands(document)}):
        exports: list[str] = []
        for command in [c for c in commands(document) if c.block == block]:
            if rule_for(command).kind != "run":
                continue
            done = run_as_written(exports, command.text)
            ran += 1
            assert done.returncode == 0, f"{command.text}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            if command.text.startswith("export "):
                exports.append(command.text)
            if command.text.startswith("curl") and not done.stdout.strip():  # BentoML's probes: empty 200s
                (path,) = re.findall(r"localhost:3000(/\S*)", command.text)
                assert path in ("/livez", "/healthz", "/readyz"), f"{command.text}: no output"
                assert requests.get(f"{docs_server.url}{path}", timeout=10).status_code == 200
            elif command.text.startswith("curl"):
                if done.stdout.lstrip().startswith("{") and "|" not in command.text:
                    answer = json.loads(done.stdout)
                    assert "error" not in answer, f"{command.text}: {done.stdout[:500]}"
    if document in ("README.md", "k8s/README.md", "docker/README.md"):
        assert ran > 0


def test_the_readmes_python_examples_run_as_written(docs_server):
    examples = python_examples("README.md")
    assert examples, "README.md lost its Python request example"
    for example in examples:
        done = subprocess.run([sys.executable, "-c", example], cwd=PROJECT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{example}\n{done.stderr[-3000:]}"


def test_every_route_has_a_documented_request(docs_server):
    """Each path of /docs.json (but V2's /versions/ aliases) is called by some README command."""
    urls = [url for c in commands("README.md") for url in re.findall(r"localhost:3000(/[^\s'\"|]*)", c.text)]
    paths = requests.get(f"{docs_server.url}/docs.json", timeout=10).json()["paths"]
    missing = []
    for path in paths:
        if "/versions/" in path:
            continue
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path))
        if not any(re.fullmatch(pattern, url) for url in urls):
            missing.append(path)
    assert not missing, f"routes without a request in README.md: {missing}"


def test_the_readme_examples_answer_what_the_models_say(docs_server):
    """The example inputs are not only accepted: the two cells and the digit get their labels."""
    malaria = run_as_written([], "curl -s localhost:3000/malaria -F images=@examples/cells/cell1.png "
                                 "-F images=@examples/cells/cell2.jpg")
    labels = [p["label"] for p in json.loads(malaria.stdout)["predictions"]]
    assert labels == ["Parasitized", "Uninfected"], malaria.stdout
    digit = run_as_written([], "curl -s localhost:3000/digits -F images=@examples/digit.png")
    assert json.loads(digit.stdout)["predictions"][0]["label"] == "3", digit.stdout
    batch = (PROJECT / "examples" / "kobe-shots.csv").read_text().splitlines()
    assert batch[0].split(",")[-1] == "shot_id" and len(batch) == 7


def test_mlflow_ui_starts_as_written():
    """The README's `mlflow ui` command serves its page (on its default port), then stops."""
    (command,) = [c.text for d in DOCUMENTS for c in commands(d) if rule_for(c).kind == "background"]
    process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=PROJECT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()[-3000:] if process.stderr else ""
            try:
                if requests.get("http://127.0.0.1:5000/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "mlflow ui did not answer in 120 s"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
