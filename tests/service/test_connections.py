"""Connection limits of the real server (service/connections.py): idle and slow clients
are closed on time, a connection cap holds, heads over the size cap are refused early,
and normal requests are served meanwhile."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.servers import Server

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 4.0
KEEP_ALIVE = 2.0
MAX_CONNECTIONS = 150
MAX_HEADER_BYTES = 64 * 1024  # the default
IRIS = {"records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}


@pytest.fixture(scope="module")
def limited(quick_models) -> Iterator[Server]:
    server = Server({"HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "HTTP_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
                     "HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS), "HTTP_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES)})
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


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection, by a FIN or, when it
    closes with bytes of ours unread, a reset (fails if it stays open)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def livez_with_header(size: int) -> bytes:
    """GET /livez whose request line and headers are `size` bytes (an X-Pad header fills them)."""
    start, end = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def assert_431(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert b"content-type: application/json" in head and b"connection: close" in head
    assert json.loads(body) == {"error": f"request line and headers larger than {MAX_HEADER_BYTES} bytes"}


class Sender(threading.Thread):
    """Sends `data` in pieces of `piece` bytes (pausing 1 ms every `pause_every` pieces)
    until all is sent or the server cuts the connection; `sent` counts what went out."""

    def __init__(self, sock: socket.socket, data: bytes, piece: int, pause_every: int = 0) -> None:
        super().__init__(daemon=True)
        self.sock, self.data, self.piece, self.pause_every = sock, data, piece, pause_every
        self.sent = 0
        self.error: OSError | None = None

    def run(self) -> None:
        view = memoryview(self.data)
        try:
            for n, start in enumerate(range(0, len(view), self.piece)):
                self.sock.sendall(view[start:start + self.piece])
                self.sent += len(view[start:start + self.piece])
                if self.pause_every and n % self.pause_every == 0:
                    time.sleep(0.001)
        except OSError as error:  # BrokenPipeError, ConnectionResetError
            self.error = error


def test_a_100_kb_header_gets_431_and_the_connection_is_closed(limited):
    sock = connect(limited)
    sender = Sender(sock, livez_with_header(100_000), 100_000)
    sender.start()
    assert_431(read_answer(sock, 5))
    sender.join(5)


def test_a_head_of_just_the_cap_is_served(limited):
    sock = connect(limited)
    for size in (MAX_HEADER_BYTES - 1, MAX_HEADER_BYTES):  # two requests on one connection
        sock.sendall(livez_with_header(size))
        sock.settimeout(5)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 200, (size, answer.status, answer.read())
        answer.read()
    sock.close()


def test_a_head_sent_in_1_kb_pieces_is_refused_long_before_10_mb_are_sent(limited):
    sock = connect(limited)
    sender = Sender(sock, livez_with_header(10 * 2**20), 1024, pause_every=8)  # at most 8 MB/s
    started = time.monotonic()
    sender.start()
    sock.settimeout(5)
    first = sock.recv(65536)
    answered, sent_when_answered = time.monotonic() - started, sender.sent
    answer = first + read_answer(sock, 5)
    sender.join(10)
    assert_431(answer)
    assert isinstance(sender.error, (BrokenPipeError, ConnectionResetError)), sender.error  # cut off
    assert sent_when_answered < 5 * 2**20 and answered < 1, (sent_when_answered, answered)
    assert sender.sent < 10 * 2**20


def test_livez_answers_within_1_s_while_a_64_mb_header_is_sent(limited):
    sock = connect(limited)
    sender = Sender(sock, livez_with_header(64 * 2**20), 64 * 2**20)  # one sendall
    sender.start()
    for _ in range(5):
        started = time.monotonic()
        assert requests.get(limited.url + "/livez", timeout=1).status_code == 200
        assert time.monotonic() - started < 1
    assert_431(read_answer(sock, 5))
    sender.join(5)
    assert not sender.is_alive() and sender.error is not None  # cut off, not read to the end


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
