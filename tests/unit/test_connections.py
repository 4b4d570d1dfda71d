"""The connection guard registers itself as uvicorn's default HTTP protocol, and its
header-size cap counts the right bytes (the protocol driven over a fake transport; the
real server is tested in tests/service/test_connections.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from uvicorn import config
from uvicorn.importer import import_from_string
from uvicorn.server import ServerState

from service import connections
from service.errors import error_body

CAP = 1000  # bytes of a head, small enough to make heads of any shape in a test


def test_guard_registers_a_subclass_of_uvicorns_httptools_protocol(monkeypatch):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    monkeypatch.setitem(config.HTTP_PROTOCOLS, "auto", config.HTTP_PROTOCOLS["auto"])
    connections.guard_connections()
    protocol = import_from_string(config.HTTP_PROTOCOLS["auto"])
    assert issubclass(protocol, HttpToolsProtocol) and protocol is not HttpToolsProtocol


async def echo_length(scope, receive, send) -> None:
    """Answers 200 with the length of the body it read."""
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Transport:
    """What the protocol uses of an asyncio transport; keeps what was written."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.protocol: object = None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 3000)}.get(name, default)

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_protocol(self) -> object:
        return self.protocol

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol


class Parser:
    """httptools' parser, counting the bytes it is fed."""

    def __init__(self, parser: object) -> None:
        self.parser = parser
        self.fed = 0
        self.pieces: list[int] = []

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.pieces.append(len(data))
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.parser, name)


async def answer_at_once(scope, receive, send) -> None:
    """Answers 200 without reading the body."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Connection:
    """One connection to the guarded protocol, over a fake transport, on a private loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app=echo_length) -> None:
        settings = config.Config(app=app, lifespan="off", log_level="warning")
        settings.load()
        self.loop = loop
        self.state = ServerState()
        self.protocol = connections.guarded_protocol()(config=settings, server_state=self.state,
                                                       app_state={}, _loop=loop)
        self.parser = self.protocol.parser = Parser(self.protocol.parser)
        self.transport = Transport()
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    def send(self, data: bytes, piece: int | None = None) -> None:
        """Deliver data in reads of `piece` bytes (one read if None), until the connection closes."""
        piece = piece or len(data)
        for start in range(0, len(data), piece):
            if self.transport.closing:
                break
            self.protocol.data_received(data[start:start + piece])
        self.settle()

    def settle(self) -> None:
        """Run the requests' tasks (pipelined ones start one after another)."""
        for _ in range(50):
            self.loop.run_until_complete(asyncio.sleep(0))
            if not self.state.tasks:
                return

    def answers(self) -> list[bytes]:
        return [b"HTTP/1.1 " + a for a in bytes(self.transport.written).split(b"HTTP/1.1 ")[1:]]


@pytest.fixture
def connect(monkeypatch) -> Iterator:
    monkeypatch.setattr(connections, "MAX_HEADER_BYTES", CAP)
    loop = asyncio.new_event_loop()
    opened: list[Connection] = []

    def open_connection(app=echo_length) -> Connection:
        opened.append(Connection(loop, app))
        return opened[-1]

    yield open_connection
    for connection in opened:
        connection.protocol.connection_lost(None)
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def head(size: int, target: bytes = b"/x", method: bytes = b"GET", extra: bytes = b"") -> bytes:
    """A request line and headers of exactly `size` bytes (an X-Pad header fills them up)."""
    start = method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"X-Pad: "
    end = b"\r\n\r\n"
    assert size >= len(start) + len(end)
    return start + b"a" * (size - len(start) - len(end)) + end


def post(body: bytes, head_size: int = 300) -> bytes:
    return head(head_size, b"/x", b"POST", b"Content-Length: %d\r\n" % len(body)) + body


def assert_431(connection: Connection) -> None:
    answer = bytes(connection.transport.written)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    head_part, body = answer.split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in head_part and b"connection: close" in head_part
    message = f"request line and headers larger than {CAP} bytes"
    assert body == error_body(message) and json.loads(body) == {"error": message}  # the project's error body
    assert connection.transport.closing


@pytest.mark.parametrize("piece", [None, 1, 7, 100, CAP, 4096])
def test_a_head_over_the_cap_gets_431_and_no_more_of_it_is_parsed(connect, piece):
    connection = connect()
    connection.send(head(20 * CAP), piece)
    assert_431(connection)
    assert connection.parser.fed == CAP  # the cap, then nothing: the rest is never parsed
    assert not connection.state.tasks and connection.protocol.cycle is None  # the app never saw it


@pytest.mark.parametrize("piece", [None, 1, 13, CAP // 2])
def test_a_head_of_exactly_the_cap_is_served_and_one_byte_more_is_not(connect, piece):
    served = connect()
    served.send(head(CAP), piece)
    assert served.answers() == [b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n0"]
    refused = connect()
    refused.send(head(CAP + 1), piece)
    assert_431(refused)


@pytest.mark.parametrize("target", [b"/" + b"a" * 2 * CAP, b"/?q=" + b"%C3%A9" * CAP])
def test_a_long_url_counts_toward_the_cap(connect, target):
    connection = connect()
    connection.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n", 64)
    assert_431(connection)


def test_a_url_with_raw_non_ascii_bytes_is_refused_at_its_first_read(connect):
    connection = connect()
    connection.send(b"GET /" + "é".encode() * 20 * CAP + b" HTTP/1.1\r\nHost: x\r\n\r\n", 64)
    assert connection.answers()[0].startswith(b"HTTP/1.1 400 ")  # the parser's own refusal
    assert connection.transport.closing and connection.parser.fed == 64


@pytest.mark.parametrize("piece", [None, 1000, 4096])
def test_a_body_does_not_count(connect, piece):
    connection = connect()
    connection.send(post(b"b" * 50 * CAP, head_size=CAP), piece)  # the head is at the cap, the body 50 times it
    assert connection.answers() == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n50000"]


@pytest.mark.parametrize("piece", [1, 512, 4096])
def test_a_chunked_body_does_not_count_but_its_trailers_do(connect, piece):
    chunked = head(300, b"/x", b"POST", b"Transfer-Encoding: chunked\r\n")
    chunks = b"".join(b"%x\r\n%s\r\n" % (size, b"c" * size) for size in (3 * CAP, 1, 5 * CAP)) + b"0\r\n"
    for reads in (None, piece):
        connection = connect()
        connection.send(chunked + chunks + b"X-Trailer: " + b"t" * (CAP // 2) + b"\r\n\r\n", reads)
        assert connection.answers() == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n8001"]

    too_long = chunked + chunks + b"X-Trailer: " + b"t" * 20 * CAP + b"\r\n\r\n"
    connection = connect()
    connection.send(too_long, piece)
    assert connection.transport.closing  # its own response is under way: closed without a 431
    assert connection.answers() == []
    assert connection.parser.fed <= len(chunked + chunks) + CAP + piece  # counted from the read after "0\r\n"

    connection = connect(answer_at_once)  # answered before its body: still no 431 after the answer
    connection.send(chunked)
    connection.send(too_long[len(chunked):], piece)
    assert connection.transport.closing
    assert connection.answers() == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]


@pytest.mark.parametrize("piece", [None, 1, 500])
def test_each_request_on_a_kept_alive_connection_has_its_own_count(connect, piece):
    connection = connect()
    for n in range(5):  # 5 heads just under the cap: together 5 times over it
        connection.send(post(b"x" * n, head_size=CAP - 10), piece)
        assert not connection.transport.closing
    connection.send(head(CAP + 1), piece)
    answers = connection.answers()
    assert [a[:12] for a in answers] == [b"HTTP/1.1 200"] * 5 + [b"HTTP/1.1 431"], answers
    assert connection.transport.closing


def test_pipelined_requests_in_one_read_have_their_own_count(connect):
    connection = connect()
    connection.send(b"".join(post(b"y" * n, head_size=CAP - 10) for n in range(5)) + b"\r\n" * 10)
    assert connection.answers() == [b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n%d" % n for n in range(5)]
    assert not connection.transport.closing


def test_a_head_pipelined_behind_a_response_under_way_closes_the_connection_without_431(connect):
    connection = connect()
    connection.send(post(b"z" * 10) + head(20 * CAP), 500)  # the 431 would land inside the first answer
    assert connection.transport.closing and b"HTTP/1.1 431" not in connection.transport.written
    assert connection.parser.fed <= len(post(b"z" * 10)) + CAP + 500


def test_the_next_head_is_counted_after_a_request_answered_before_its_body_ended(connect):
    connection = connect(answer_at_once)
    connection.send(post(b"b" * 20 * CAP)[:400])  # the head and the start of the body
    connection.send(post(b"b" * 20 * CAP)[400:] + head(20 * CAP), 700)
    assert connection.answers()[0] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert connection.answers()[1].startswith(b"HTTP/1.1 431 ") and connection.transport.closing


def test_a_small_request_is_parsed_in_one_piece(connect):
    """The hot path: a read under the cap goes to the parser as it came, not cut up."""
    connection = connect()
    request = post(b'{"a": 1}')
    connection.send(request)
    assert connection.parser.pieces == [len(request)]
    assert connection.answers() == [b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n8"]
