"""Connection limits for the HTTP server: a header timeout, a keep-alive timeout, a cap.

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
"""

from __future__ import annotations

import asyncio
import os

from service.errors import error_body

HEADER_TIMEOUT_S = float(os.environ.get("HTTP_HEADER_TIMEOUT", 10))
KEEP_ALIVE_TIMEOUT_S = float(os.environ.get("HTTP_KEEP_ALIVE_TIMEOUT", 75))
MAX_CONNECTIONS = int(os.environ.get("HTTP_MAX_CONNECTIONS", 2048))


def _response(status: str, message: str, extra: str = "") -> bytes:
    body = error_body(message)
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


REQUEST_TIMEOUT = _response("408 Request Timeout", "request headers not received in time")
TOO_MANY_CONNECTIONS = _response("503 Service Unavailable", "too many open connections", "retry-after: 1\r\n")


def guarded_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the limits above (written for uvicorn 0.55.0:
    service/patches.py refuses another version)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools missing: uvicorn would fall back to h11, without the limits
        raise RuntimeError("httptools is not installed: the connection limits (service/connections.py) "
                           "subclass uvicorn's httptools protocol") from None

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """HttpToolsProtocol with a header deadline, a keep-alive timeout and a connection cap."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.timeout_keep_alive = KEEP_ALIVE_TIMEOUT_S
            self._header_deadline: asyncio.TimerHandle | None = None
            self._request_started = False

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
            super().data_received(data)  # cancels the keep-alive timer on any byte
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
            super().on_headers_complete()

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
