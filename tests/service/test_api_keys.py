"""API keys on a real server (service/keys.py): every route of /docs.json with no key, a
wrong key, malformed headers, a key of another scope and the right one; the answer comes
before the body; rotation while requests run; names in logs and metrics, never keys."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import requests

from service.keys import line_for, required_scope
from service.routes import ROUTES
from tests.conftest import KeyedServer
from tests.servers import Server
from tests.unit.test_keys import swap as kubelet_swap

TYPED = frozenset(route.path for route in ROUTES)
SCOPED_KEY = {"predict": "predictor", "read": "reader", "metrics": "scraper"}
OTHER_KEY = {"predict": "reader", "read": "scraper", "metrics": "predictor"}
MALFORMED = ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer two words", "Token abc", "bearer" + " x" * 3,
             "Bearer " + "k" * 1000]


def operations(server: KeyedServer) -> list[tuple[str, str, str]]:
    """(method, concrete path, documented path) of every operation of /docs.json, and /metrics."""
    document = requests.get(server.url + "/docs.json", timeout=10).json()
    iris = requests.get(server.url + "/models", headers=server.auth(), timeout=10).json()["models"]
    version = next(m["tag"] for m in iris if m["name"] == "iris").split(":")[1]
    found = [("get", "/metrics", "/metrics")]
    for path, methods in document["paths"].items():
        concrete = path.replace("{name}", "iris").replace("{version}", version)
        found += [(method, concrete, path) for method in methods if method in ("get", "post", "head")]
    return found


def call(server: KeyedServer, method: str, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.request(method, server.url + path, headers=headers, timeout=30)


def test_every_route_refuses_strangers_and_admits_its_scope(keyed_server):
    server = keyed_server
    checked = 0
    for method, path, documented in operations(server):
        scope = required_scope(path, TYPED)
        assert required_scope(documented.replace("{name}", "x").replace("{version}", "y"), TYPED) == scope
        if scope == "open":
            answer = call(server, method, path)
            assert answer.status_code < 400 or answer.status_code in (404, 405), (path, answer.status_code)
            continue
        attempts: list[tuple[str, dict[str, str] | None, int]] = [
            ("no key", None, 401), ("unknown key", {"Authorization": "Bearer not-a-key"}, 401),
            *[(f"malformed {value[:20]!r}", {"Authorization": value}, 401) for value in MALFORMED],
            ("another scope's key", server.auth(OTHER_KEY[scope]), 403),
        ]
        for what, headers, status in attempts:
            answer = call(server, method, path, headers)
            assert answer.status_code == status, (method, path, what, answer.status_code, answer.text[:200])
            assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="model-serving"')
            if method != "head":
                assert set(answer.json()) == {"error"}, answer.text
            if status == 403:
                assert f'scope="{scope}"' in answer.headers["WWW-Authenticate"]
        for name in ("all", SCOPED_KEY[scope]):
            answer = call(server, method, path, server.auth(name))
            assert answer.status_code not in (401, 403) and answer.status_code < 500, (path, name, answer.text[:200])
        checked += 1
    assert checked >= len(ROUTES) + 8  # typed routes, V2 infer and metadata, /models, drift, shadow, /metrics


def test_the_key_admits_a_real_prediction_and_the_scheme_is_case_insensitive(keyed_server):
    record = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    key = keyed_server.api_keys["predictor"]
    for header in (f"Bearer {key}", f"bearer {key}", f"BEARER  {key} "):
        answer = requests.post(keyed_server.url + "/iris", json={"records": [record]},
                               headers={"Authorization": header}, timeout=10)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "setosa", answer.text


def test_two_authorization_headers_are_refused(keyed_server):
    with socket.create_connection(("127.0.0.1", keyed_server.port), timeout=5) as sock:
        key = keyed_server.api_keys["all"]
        sock.sendall(f"GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                     f"Authorization: Bearer other\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 401")


def test_a_huge_header_is_refused_without_a_server_error(keyed_server):
    answer = requests.get(keyed_server.url + "/models", headers={"Authorization": "Bearer " + "k" * 100_000},
                          timeout=10)
    assert answer.status_code == 431


def test_the_answer_comes_before_the_body(keyed_server):
    """A stranger's upload is refused from its headers: the server does not wait for 10 MB."""
    with socket.create_connection(("127.0.0.1", keyed_server.port), timeout=5) as sock:
        sock.sendall(b"POST /malaria HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 10000000\r\n\r\n")
        started = time.monotonic()
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 401") and b"connection: close" in head.lower()
        assert time.monotonic() - started < 5


def test_names_reach_logs_and_metrics_never_keys(keyed_server):
    server = keyed_server
    call(server, "get", "/metrics", server.auth("reader"))  # 403, logged with the key's name
    call(server, "get", "/models", {"Authorization": "Bearer wrong"})
    call(server, "get", "/models/nothing/drift", server.auth("reader"))  # 404 for a known key
    metrics = call(server, "get", "/metrics", server.auth("scraper")).text
    for reason in ("missing", "unknown", "malformed", "scope"):
        assert f'api_key_refusals_total{{reason="{reason}"}}' in metrics, reason
    assert 'api_key_requests_total{key="reader"}' in metrics
    time.sleep(0.5)
    log = server.log.read_text()
    assert "GET /metrics answered 403: the API key 'reader' lacks the scope 'metrics' this route needs (key reader)" \
        in log
    assert "GET /models/nothing/drift answered 404" in log and "(key reader)" in log
    for key in server.api_keys.values():
        assert key not in log and key not in metrics
    assert "Traceback" not in log


def test_the_document_declares_the_scheme_and_each_operations_scope(keyed_server):
    document = requests.get(keyed_server.url + "/docs.json", timeout=10).json()
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["apiKey"][
            "description"]}
    iris = document["paths"]["/iris"]["post"]
    assert iris["security"] == [{"apiKey": []}] and iris["x-required-scope"] == "predict"
    assert {"401", "403"} <= set(iris["responses"])
    assert document["paths"]["/models"]["get"]["x-required-scope"] == "read"
    assert "security" not in document["paths"]["/readyz"]["get"]


@pytest.mark.slow
def test_rotation_while_requests_run_fails_no_request_of_a_key_that_stayed(quick_models, tmp_path):
    """The Secret is swapped as the kubelet does, ten times, under steady requests of key a;
    key b comes and goes. Every request of a succeeds; b works after it is added, not after."""
    a, b = "key-a-" + os.urandom(8).hex(), "key-b-" + os.urandom(8).hex()
    line_a, line_b = line_for("a", ["read"], a), line_for("b", ["read"], b)
    kubelet_swap(tmp_path, line_a + "\n", 0)
    (tmp_path / "api-keys").symlink_to("..data/api-keys")
    server = Server({"API_KEYS_FILE": str(tmp_path / "api-keys"), "REQUIRE_API_KEYS": "1"})
    statuses: list[int] = []
    stop = threading.Event()

    def steady() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                statuses.append(session.get(server.url + "/models", headers={"Authorization": f"Bearer {a}"},
                                            timeout=10).status_code)

    try:
        server.wait("/readyz")
        workers = [threading.Thread(target=steady) for _ in range(4)]
        for worker in workers:
            worker.start()
        for generation in range(1, 11):
            with_b = generation % 2 == 1
            kubelet_swap(tmp_path, f"{line_a}\n{line_b}\n" if with_b else f"# b revoked\n{line_a}\n", generation)
            deadline = time.monotonic() + 5
            expected = 200 if with_b else 401
            while time.monotonic() < deadline:
                answer = requests.get(server.url + "/models", headers={"Authorization": f"Bearer {b}"}, timeout=10)
                if answer.status_code == expected:
                    break
                time.sleep(0.1)
            assert answer.status_code == expected, (generation, answer.status_code)
        stop.set()
        for worker in workers:
            worker.join()
        assert len(statuses) > 50 and set(statuses) == {200}, sorted(set(statuses))
        assert "API keys reloaded" in server.log.read_text()
    finally:
        stop.set()
        server.stop()
