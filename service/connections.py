"""Connection limits for the HTTP server: a header timeout and size cap, a keep-alive timeout, a cap.

uvicorn 0.55 (which BentoML 1.4 runs) never times out a connection that is still sending
its request line or headers: 300 sockets holding partial headers stayed open for good.
It has no cap on connections either, and BentoML passes no `limit_concurrency`. This
module gives the worker's uvicorn a protocol class, a subclass of its own httptools
protocol, that adds them:

- HTTP_HEADER_TIMEOUT (s, default 10): from the moment the connection opens, or from the
  first byte of the next request on a kept-alive connection (any byte that arrives while
  no request is in progress), the request line and headers must arrive in time; else 408
  (unless an earlier response is still being sent) and the connection is closed. A
  connection that sends nothing is closed too (no answer: it asked nothing). The body's
  time is bounded by the service's traffic timeout (30 s, 504).
- HTTP_KEEP_ALIVE_TIMEOUT (s, default 75): an idle kept-alive connection is closed after
  this long; it replaces `bentoml serve --timeout-keep-alive`. Longer than the 60 s idle
  timeout of ingress-nginx and the usual cloud load balancers, so the proxy closes idle
  upstream connections first (the other way round a proxy can reuse a connection just
  as the server closes it and answer 502).
- HTTP_MAX_CONNECTIONS (default 2048): a connection beyond this many open ones is
  answered 503 with Retry-After and closed at once; connections under the cap are served
  meanwhile. In-flight requests have their own cap (max_concurrency 512, 429).
- HTTP_MAX_HEADER_BYTES (default 65536 = 64 KiB): the request line and headers of one
  request, counted as bytes on the wire, may hold this many bytes; beyond, 431 with the
  error body, and the connection is closed without parsing the rest. uvicorn has no such
  cap, and httptools copies a header value that is still arriving on every read (uvicorn
  does the same with the URL): one 64 MB header took 2.8 s of the event loop. 64 KiB is
  generous, as in a mature proxy: nginx serves heads up to 4 x 8 KiB
  (large_client_header_buffers), Node.js 16 KiB, and an ingress in front refuses bigger
  ones first. A URL too long gets the same 431, not 414: the parser does not tell where
  the request line ends inside a head, and the body says what the limit is. A
  percent-encoded non-ASCII URL counts its 3 bytes a byte; raw non-ASCII bytes in a URL
  get the parser's 400 at once. The trailers of a chunked body count the same way (they
  are parsed like headers, at the same cost); body bytes never count.
  The cost is a few integer operations per read and two small callbacks per request: the
  bytes of each read that arrives while a head is incomplete are added up, and the count
  starts again at the end of each head (each request on a kept-alive or pipelined
  connection has its own). A head that begins in the middle of a read (pipelined behind
  another request in the same read) is counted from the next read on, so it may pass the
  cap by the rest of that one read (at most 256 KiB, the event loop's read size): a
  bounded cost. While an earlier pipelined response is still being sent, the connection
  is closed without the 431, as for 408; so it is when trailers are too large (the
  request's own response may have begun).
"""

from __future__ import annotations

import asyncio
import os

from service.errors import error_body

HEADER_TIMEOUT_S = float(os.environ.get("HTTP_HEADER_TIMEOUT", 10))
KEEP_ALIVE_TIMEOUT_S = float(os.environ.get("HTTP_KEEP_ALIVE_TIMEOUT", 75))
MAX_CONNECTIONS = int(os.environ.get("HTTP_MAX_CONNECTIONS", 2048))
MAX_HEADER_BYTES = int(os.environ.get("HTTP_MAX_HEADER_BYTES", 65536))


def _response(status: str, message: str, extra: str = "") -> bytes:
    body = error_body(message)
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


REQUEST_TIMEOUT = _response("408 Request Timeout", "request headers not received in time")
NOT_HTTP = _response("400 Bad Request", "the request is not valid HTTP/1.1")
TOO_MANY_CONNECTIONS = _response("503 Service Unavailable", "too many open connections", "retry-after: 1\r\n")


def headers_too_large() -> bytes:
    return _response("431 Request Header Fields Too Large",
                     f"request line and headers larger than {MAX_HEADER_BYTES} bytes")


def guarded_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the limits above (written for uvicorn 0.55.0:
    service/patches.py refuses another version)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools missing: uvicorn would fall back to h11, without the limits
        raise RuntimeError("httptools is not installed: the connection limits (service/connections.py) "
                           "subclass uvicorn's httptools protocol") from None

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """HttpToolsProtocol with a header deadline and size cap, a keep-alive timeout and a
        connection cap."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.timeout_keep_alive = KEEP_ALIVE_TIMEOUT_S
            self._header_deadline: asyncio.TimerHandle | None = None
            self._request_started = False
            # Bytes of the reads that arrived while a head (request line and headers, or a
            # chunked body's trailers) was incomplete; counted only while _counting.
            self._counting = True
            self._head_bytes = 0
            self._in_body = False  # between a request's headers and its end (trailers included)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > MAX_CONNECTIONS:
                transport.write(TOO_MANY_CONNECTIONS)
                transport.close()
                return
            self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._counting:  # a body
                super().data_received(data)  # cancels the keep-alive timer on any byte
            elif self._head_bytes + len(data) <= MAX_HEADER_BYTES:
                self._head_bytes += len(data)
                super().data_received(data)
            elif not self._receive_up_to_the_cap(data):
                return  # refused
            # Bytes that start no request (a stray CRLF between requests, the rest of a body
            # refused before it was read) must not leave the connection without a timer.
            if (self._header_deadline is None and self.timeout_keep_alive_task is None
                    and not self.transport.is_closing() and not self.pipeline
                    and (self.cycle is None or self.cycle.response_complete)):
                self._arm_header_deadline()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._request_started = True
            if self._header_deadline is None:  # the next request on a kept-alive connection
                self._arm_header_deadline()

        def on_headers_complete(self) -> None:
            self._disarm_header_deadline()
            self._request_started = False
            self._counting = False
            self._head_bytes = 0
            self._in_body = True
            super().on_headers_complete()

        def on_chunk_header(self) -> None:
            # The end of a chunk-size line: counted until the chunk's data starts. After the
            # last chunk's line come the trailers, parsed like headers (at the same cost).
            self._counting = True
            self._head_bytes = 0

        def on_body(self, body: bytes) -> None:
            self._counting = False
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._counting = True  # the next request's head
            self._head_bytes = 0
            self._in_body = False
            super().on_message_complete()

        def _receive_up_to_the_cap(self, data: bytes) -> bool:
            """Feed `data`, whose bytes would pass the cap if all were the current head's, only
            while they are not: part by part, refusing once a head is still incomplete at the
            cap (False); True when all was fed. Only reads that cross the cap come here."""
            view = memoryview(data)
            while True:  # here: self._counting and self._head_bytes + len(view) > MAX_HEADER_BYTES
                room = MAX_HEADER_BYTES - self._head_bytes
                self._head_bytes = MAX_HEADER_BYTES  # reset (to 0) only if the head ends in view[:room]
                if room > 0:
                    super().data_received(view[:room])
                    if self.transport.is_closing() or self.transport.get_protocol() is not self:
                        return False  # a 400, or a WebSocket upgrade took the connection
                if self._counting and self._head_bytes == MAX_HEADER_BYTES:
                    self._refuse_large_head()
                    return False
                view = view[room:]
                if not self._counting:
                    super().data_received(view)
                    return True
                if self._head_bytes + len(view) <= MAX_HEADER_BYTES:
                    self._head_bytes += len(view)
                    super().data_received(view)
                    return True

        def _refuse_large_head(self) -> None:
            self._disarm_header_deadline()
            # Never inside a response: an earlier pipelined one, or the request's own (trailers).
            if not self._in_body and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(headers_too_large())
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            """What uvicorn answers bytes httptools cannot parse, in the one error body
            (uvicorn's own is text/plain)."""
            self._disarm_header_deadline()
            self.transport.write(NOT_HTTP)
            self.transport.close()

        def _arm_header_deadline(self) -> None:
            self._header_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_late)

        def _disarm_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_late(self) -> None:
            self._header_deadline = None
            if self.transport.is_closing():
                return
            answering = self.cycle is not None and not self.cycle.response_complete
            if self._request_started and not answering:  # never inside an earlier response
                self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()

    return GuardedHttpToolsProtocol


def guard_connections() -> None:
    """Make uvicorn's default ("auto") HTTP protocol the guarded one, in this process.

    BentoML's worker builds `uvicorn.Config` without an `http` argument after importing the
    service, so the registry entry for "auto" is what it resolves.
    """
    global PROTOCOL
    from uvicorn import config

    PROTOCOL = guarded_protocol()
    config.HTTP_PROTOCOLS["auto"] = f"{__name__}:PROTOCOL"


PROTOCOL: type[asyncio.Protocol] | None = None
"""The guarded protocol class once guard_connections() ran (uvicorn imports it by name)."""
