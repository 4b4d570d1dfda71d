"""/metrics stays small whatever paths clients send; hang-ups are not server errors; client
errors log one line, without a traceback."""

from __future__ import annotations

import json
import random
import re
import socket
import string
import time
from pathlib import Path

import pytest
import requests

from service.errors import CLIENT_CLOSED_REQUEST
from service.patches import UNMATCHED_ROUTE
from tests.service.metrics import request_counts

PROJECT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

IRIS_RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
def random_name(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=16))


def test_unknown_paths_and_model_names_do_not_grow_metrics(server):
    session = requests.Session()
    rng = random.Random(11)

    def fuzz(times: int) -> list[str]:
        names = [random_name(rng) for _ in range(times)]
        for name in names:
            session.get(f"{server.url}/{name}/{rng.randrange(10**9)}")
            session.post(f"{server.url}/v2/models/{name}/infer", json={"inputs": []})
            session.get(f"{server.url}/v2/models/{name}/versions/{rng.randrange(10**9)}/ready")
        return names

    fuzz(3)  # every label these requests get exists from here on
    before = requests.get(f"{server.url}/metrics").text
    names = fuzz(1000)  # 3,000 requests
    after = requests.get(f"{server.url}/metrics").text

    assert len(after) < 1.5 * len(before), (len(before), len(after))
    assert not [name for name in names if name in after]
    counts = request_counts(server.url)
    assert counts[UNMATCHED_ROUTE, 404] >= 1003
    assert counts["/v2/models/{name}/infer", 404] >= 1003
    assert counts["/v2/models/{name}/versions/{version}/ready", 404] >= 1003


def hang_up_mid_body(server, path: str, content_type: str) -> None:
    """Send headers announcing a 100 kB body, a few bytes of it, then close the socket."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: 100000\r\n\r\n".encode() + b'{"records": [')
        time.sleep(0.2)


def hang_up_before_the_answer(server, path: str, body: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def log_since(server, offset: int, last: str) -> str:
    """The server's log from offset on, once `last` is in it (the worker logs through its parent)."""
    deadline = time.monotonic() + 10
    text = server.log.read_text()[offset:]
    while last not in text and time.monotonic() < deadline:
        time.sleep(0.1)
        text = server.log.read_text()[offset:]
    return text


def test_hang_ups_and_client_errors_are_not_server_errors(server):
    offset = len(server.log.read_text())
    before = request_counts(server.url)
    routes = {"/iris": "application/json", "/malaria": "multipart/form-data; boundary=x",
              "/v2/models/iris/infer": "application/json"}
    for path, content_type in routes.items():
        hang_up_mid_body(server, path, content_type)
    for _ in range(5):
        hang_up_before_the_answer(server, "/iris", json.dumps({"records": [IRIS_RECORD] * 1000}).encode())
    time.sleep(1)  # let the hung-up requests finish
    # Client errors BentoML itself finds (pydantic), and ours; /kobe's comes last.
    client_errors = [
        ("/malaria", dict(files=[("images", (None, b"x"))])),
        ("/iris", dict(data=b"{", headers={"Content-Type": "application/json"})),
        ("/iris", dict(json={"records": [{**IRIS_RECORD, "colour": "blue"}]})),
        ("/kobe", dict(json={"records": "none"})),
    ]
    for path, request in client_errors:
        assert requests.post(server.url + path, **request).status_code == 400

    after = request_counts(server.url)
    grown = {key: value - before.get(key, 0) for key, value in after.items() if value > before.get(key, 0)}
    assert not [key for key in grown if key[1] >= 500], grown
    for path in routes:
        label = "/v2/models/{name}/infer" if path.startswith("/v2") else path
        assert grown.get((label, CLIENT_CLOSED_REQUEST)) == 1, grown

    log = log_since(server, offset, "POST /kobe answered 400")
    assert "Traceback" not in log and "[ERROR]" not in log, log
    assert len(re.findall(r"POST /iris answered 400: ", log)) == 2, log  # the broken JSON, the extra field
    assert re.search(r"POST /kobe answered 400: records: ", log), log
    assert "POST /iris answered 499" in log, log


def test_every_client_error_is_one_escaped_line_with_its_route(server):
    offset = len(server.log.read_text())
    forged = "colour\x1b[2J\x07\n2026-01-01 [ERROR] forged"
    refusals = [
        ("/v2/models/iris/infer", dict(json={"inputs": [{"name": forged, "datatype": "FP32", "shape": [1],
                                                          "data": [1.0]}]}), 400),
        ("/malaria", dict(files=[("photo", ("a.png", b"x", "image/png"))]), 400),
        ("/iris", dict(data=b"{}", headers={"Content-Type": "text/plain"}), 415),
        ("/no/such/route", dict(json={}), 404),
        ("/kobe", dict(json={"records": "none"}), 400),
    ]
    for path, request, status in refusals:
        assert requests.post(server.url + path, **request).status_code == status
    log = log_since(server, offset, "POST /kobe answered 400")
    assert "\x1b" not in log and "\x07" not in log and "\n2026-01-01 [ERROR] forged" not in log, log
    assert re.search(r"POST /v2/models/iris/infer answered 400: .*colour\\x1b\[2J\\x07\\n2026", log), log
    assert "POST /malaria answered 400: unexpected multipart field 'photo'" in log, log
    assert "POST /iris answered 415: /iris takes application/json" in log, log
    assert "POST /no/such/route answered 404" in log, log
    assert "Traceback" not in log and "WARNING" not in log, log
    lines = log.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\dT.* \[INFO\] ", line) for line in lines), log  # none forged
    assert len(lines) == len(refusals), log  # one line each, the guard's 400 not also a 499


def test_the_api_and_build_versions_are_real_ones(server):
    """Outside a bento BentoML says version "None" and service_version "not available";
    the service says the project's version and that this is no image (tests/deploy checks
    the image, where both name the bento)."""
    project = re.search(r'^version = "([^"]+)"', (PROJECT / "pyproject.toml").read_text(), re.M).group(1)
    info = requests.get(f"{server.url}/docs.json", timeout=10).json()["info"]
    assert info["version"] == project and info["x-build"] == f"{project}+dev"
    requests.get(f"{server.url}/models", timeout=10)
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    versions = set(re.findall(r'service_version="([^"]*)"', metrics))
    assert versions == {f"{project}+dev"}, versions
