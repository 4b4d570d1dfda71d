"""Connection limits of the real server (service/connections.py): idle and slow clients
are closed on time, a connection cap holds, and normal requests are served meanwhile."""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.servers import Server

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 4.0
KEEP_ALIVE = 2.0
MAX_CONNECTIONS = 150
IRIS = {"records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}


@pytest.fixture(scope="module")
def limited(quick_models) -> Iterator[Server]:
    server = Server({"HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "HTTP_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
                     "HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS)})
    try:
        server.wait("/readyz")
        yield server
    finally:
        server.stop()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def post_iris() -> bytes:
    body = json.dumps(IRIS).encode()
    return (b"POST /iris HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (fails if it stays open)."""
    sock.settimeout(timeout)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_idle_and_slow_header_connections_are_closed_while_requests_are_served(limited):
    silent = [connect(limited) for _ in range(50)]
    partial = [connect(limited) for _ in range(50)]
    for sock in partial:
        sock.sendall(b"POST /iris HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    opened = time.monotonic()

    with requests.Session() as session:  # 100 idle connections do not hold anyone back
        statuses = [session.post(limited.url + "/iris", json=IRIS, timeout=5).status_code for _ in range(20)]
    assert statuses == [200] * 20
    assert time.monotonic() - opened < HEADER_TIMEOUT, "served only once the idle connections were dropped"

    for sock in silent:  # asked nothing: closed without an answer
        assert read_until_closed(sock, HEADER_TIMEOUT + 5) == b""
    for sock in partial:
        answer = read_until_closed(sock, 5)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b"request headers not received in time" in answer
    assert time.monotonic() - opened < HEADER_TIMEOUT + 5


def test_kept_alive_connection_is_reused_then_closed_when_idle(limited):
    sock = connect(limited)
    for _ in range(2):  # two requests on one connection, the second after a pause under the timeout
        sock.sendall(post_iris())
        sock.settimeout(5)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 200 and b"predictions" in answer.read()
        time.sleep(KEEP_ALIVE / 2)
    started = time.monotonic()
    assert read_until_closed(sock, KEEP_ALIVE + 5) == b""
    assert time.monotonic() - started < KEEP_ALIVE + 1


def test_bytes_that_start_no_request_do_not_keep_a_connection_open(limited):
    """A stray CRLF after an answer cancels uvicorn's keep-alive timer: the header deadline
    must then close the connection."""
    sock = connect(limited)
    sock.sendall(post_iris())
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    assert answer.status == 200 and answer.read()
    sock.sendall(b"\r\n")
    started = time.monotonic()
    rest = read_until_closed(sock, HEADER_TIMEOUT + 5)
    assert rest == b"" or rest.startswith(b"HTTP/1.1 408 "), rest[:100]
    assert time.monotonic() - started < HEADER_TIMEOUT + 2


def test_a_body_refused_before_it_is_read_ends_the_connection(limited):
    sock = connect(limited)
    sock.sendall(b"POST /iris HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 999999999\r\n\r\n{")
    answer = read_until_closed(sock, 5)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower(), answer[:200]


def test_connections_over_the_cap_get_a_short_503_and_the_rest_are_served(limited):
    held = [connect(limited) for _ in range(MAX_CONNECTIONS + 20)]
    try:
        answers: dict[socket.socket, bytes] = {}
        deadline = time.monotonic() + HEADER_TIMEOUT / 2  # silent connections under the cap stay open
        while len(answers) < 20 and time.monotonic() < deadline:
            readable, _, _ = select.select([s for s in held if s not in answers], [], [], 0.1)
            answers.update((sock, sock.recv(65536)) for sock in readable)
        time.sleep(0.2)  # any answer beyond the 20 would have come by now
        readable, _, _ = select.select([s for s in held if s not in answers], [], [], 0)
        answers.update((sock, sock.recv(65536)) for sock in readable)
        refused = list(answers.values())
        assert 20 <= len(refused) <= 21, len(refused)  # the test's own probe may hold one slot
        assert all(a.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in a for a in refused), refused[:1]
        open_one = next(s for s in held if s not in answers)
        open_one.sendall(post_iris())
        open_one.settimeout(5)
        assert open_one.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    assert requests.post(limited.url + "/iris", json=IRIS, timeout=5).status_code == 200
