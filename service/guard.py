"""Refuse what a client can get wrong before BentoML parses anything, and keep the bytes
of request bodies in flight within a memory budget.

- too large a body: 413, on the declared length and on the bytes received (a chunked
  upload cannot slip past);
- bodies in flight over MAX_BYTES_IN_FLIGHT together: 503 with Retry-After, before the
  body is read (see `RequestGuard` for why this bounds the worker's memory);
- a wrong content type: 415; a Content-Encoding (gzip, ...): 415; a transfer coding other
  than chunked: 501;
- a multipart body that is not files under `images`, has too long a filename, or lacks its
  closing boundary: 400, checked as it streams through (never held whole); a preamble
  before the first boundary (RFC 2046 allows one) is dropped;
- HEAD answered wherever GET is (the GET's headers, no body);
- a client that hangs up mid-body: recorded as 499, not BentoML's 500.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from service import logs
from service.errors import CLIENT_CLOSED_REQUEST, error_body

MAX_FILENAME_BYTES = 200
"""Longest multipart filename taken: BentoML writes each upload to a temporary file whose
name ends with it, and a name over the file system's 255 bytes failed with a 500."""
MAX_PREAMBLE_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024

Refusal = tuple[int, str, list[tuple[bytes, bytes]]]
"""(status, message, extra headers) of an answer the guard gives instead of the app's."""
RETRY_SOON = [(b"retry-after", b"1")]


class RequestGuard:
    """ASGI middleware: the checks of the module docstring, in one pass over the request.

    Memory: every POST body is admitted against `max_bytes_in_flight` before it is read
    (its declared length; a chunked body as its bytes arrive) and released when its answer
    is sent. A body is held about once while it is served (BentoML's parsed upload, or the
    JSON text, then the decoded input), and at most DECODE_THREADS pictures are decoded
    at once (service/decoding.py), so the worker's peak memory is its resting size plus
    about twice the budget plus the decoders' 64 MB each, whatever the concurrency.
    """

    def __init__(self, app: Any, max_body_bytes: int, max_bytes_in_flight: int, content_types: dict[str, str],
                 file_field: str = "images", max_parts: int = 1000) -> None:
        if max_bytes_in_flight < max_body_bytes:
            raise ValueError(f"MAX_BYTES_IN_FLIGHT ({max_bytes_in_flight}) must be at least MAX_BODY_BYTES "
                             f"({max_body_bytes}): no body could be admitted otherwise")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_bytes_in_flight = max_bytes_in_flight
        self.bytes_in_flight = 0
        self.content_types = content_types  # route -> required media type
        self.file_field = file_field
        self.max_parts = max_parts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["method"] == "HEAD":
            await self.app({**scope, "method": "GET"}, receive, _without_body(send))
        elif scope["method"] != "POST":
            await self.app(scope, receive, send)
        else:
            await self._post(scope, receive, send)

    async def _post(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        required = self.content_types.get(scope["path"].rstrip("/") or "/")
        declared = headers.get("content-length", "")
        reserved = int(declared) if declared.isascii() and declared.isdigit() else 0
        refusal = self._refusal_before_reading(scope, headers, required, reserved)
        if refusal is not None:
            await _send_refusal(send, refusal, close=True)  # unread body: the connection ends
            return
        multipart = MultipartCheck(headers.get("content-type", ""), self.file_field, self.max_parts) \
            if required == "multipart/form-data" else None
        if multipart is not None and multipart.problem is not None:  # no boundary: nothing can be read
            await _send_refusal(send, (400, multipart.problem, []), close=True)
            return
        self.bytes_in_flight += reserved
        received = 0
        cut_short: Refusal | None = None  # the answer instead of the app's, the body left unread
        disconnected = False

        async def guarded_receive() -> dict:
            nonlocal received, reserved, cut_short, disconnected
            if cut_short is not None:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                return message
            if message["type"] != "http.request":
                return message
            body = message.get("body", b"")
            received += len(body)
            if received > self.max_body_bytes:
                cut_short = (413, f"request body is over the limit of {self.max_body_bytes} bytes", [])
            elif received > reserved:  # chunked, or longer than declared: admitted as it comes
                if self.bytes_in_flight + received - reserved > self.max_bytes_in_flight:
                    cut_short = (503, "too many request bodies in flight; retry shortly", RETRY_SOON)
                else:
                    self.bytes_in_flight += received - reserved
                    reserved = received
            if cut_short is None and multipart is not None:
                body = multipart.feed(body, last=not message.get("more_body", False))
                if multipart.problem is not None:
                    cut_short = (400, multipart.problem, [])
            if cut_short is not None:
                answer = logs.ANSWER_LOGGED.get()
                if answer is not None:
                    answer["refused"] = True
                return {"type": "http.disconnect"}
            return {**message, "body": body}

        started = False

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if cut_short is not None:  # replace whatever the app answers to a cut-off body
                if not started:
                    started = True
                    await _send_refusal(send, cut_short, close=True)
                return
            if disconnected and message["type"] == "http.response.start":
                message = {**message, "status": CLIENT_CLOSED_REQUEST}  # nobody will read it
            started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
            if cut_short is not None and not started:
                await _send_refusal(send, cut_short, close=True)
            elif disconnected and not started:
                await _send_refusal(guarded_send, (CLIENT_CLOSED_REQUEST, "the client closed the connection", []))
        finally:
            self.bytes_in_flight -= reserved

    def _refusal_before_reading(self, scope: dict, headers: dict[str, str], required: str | None,
                                declared: int) -> Refusal | None:
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if required is not None and media_type != required:
            return 415, f"{scope['path']} takes {required}, not {media_type or 'a body without Content-Type'}", []
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            return 415, f"Content-Encoding {coding[:40]!r} is not supported: send the body uncompressed", []
        transfer = [c.strip() for c in headers.get("transfer-encoding", "").lower().split(",") if c.strip()]
        if transfer not in ([], ["chunked"]):
            return 501, (f"Transfer-Encoding {', '.join(transfer)[:60]!r} is not supported: "
                         "send the body as it is, or chunked"), []
        if declared > self.max_body_bytes:
            return 413, f"request body of {declared} bytes is over the limit of {self.max_body_bytes} bytes", []
        if self.bytes_in_flight + declared > self.max_bytes_in_flight:
            return 503, "too many request bodies in flight; retry shortly", RETRY_SOON
        return None


class MultipartCheck:
    """Follows a multipart body as it streams to the app: says what is wrong with it
    (`problem`) without holding it, and drops a preamble before the first boundary.

    BentoML answers 500 for a malformed body or too long a filename, and it fetches a
    part without a filename as a URL; python-multipart refuses a preamble.
    """

    def __init__(self, content_type: str, file_field: str, max_parts: int) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        self.file_field = file_field
        self.max_parts = max_parts
        self.problem: str | None = None
        self.parts = 0
        self.ended = False
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            self.problem = "malformed multipart body: the Content-Type names no boundary"
            return
        self._delimiter = b"--" + boundary
        self._preamble: bytearray | None = bytearray()  # None once the first boundary is seen
        self._header: list[bytearray] = [bytearray(), bytearray()]  # field, value being read
        self._disposition: bytes | None = None
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_end": self._end})

    def feed(self, chunk: bytes, last: bool) -> bytes:
        """The bytes to hand on (the preamble dropped); sets `problem` when there is one."""
        from python_multipart.exceptions import MultipartParseError

        if self.problem is not None:
            return b""
        if self._preamble is not None:
            chunk = self._skip_preamble(chunk)
        try:
            if chunk:
                self._parser.write(chunk)
        except MultipartParseError as exc:
            self.problem = f"malformed multipart body: {exc}"
        if last and self.problem is None and self._preamble is not None:
            self.problem = f"malformed multipart body: its boundary {self._delimiter.decode('latin-1')} never appears"
        elif last and self.problem is None and not self.ended:
            self.problem = (f"malformed multipart body: it ends before its closing boundary "
                            f"{self._delimiter.decode('latin-1')}--")
        return chunk

    def _skip_preamble(self, chunk: bytes) -> bytes:
        assert self._preamble is not None
        self._preamble += chunk
        start = 0 if self._preamble.startswith(self._delimiter) else self._preamble.find(b"\r\n" + self._delimiter)
        if start < 0:
            if len(self._preamble) > MAX_PREAMBLE_BYTES:
                self.problem = f"malformed multipart body: no boundary in its first {MAX_PREAMBLE_BYTES} bytes"
            return b""
        rest = bytes(self._preamble[start + (2 if start else 0):])
        self._preamble = None
        return rest

    def _part_begin(self) -> None:
        self.parts += 1
        self._disposition = None
        if self.parts > self.max_parts:
            self.problem = f"at most {self.max_parts} parts per multipart body"

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._append(0, data[start:end])

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._append(1, data[start:end])

    def _append(self, which: int, data: bytes) -> None:
        self._header[which] += data
        if len(self._header[which]) > MAX_PART_HEADER_BYTES:
            self.problem = f"malformed multipart body: a part header is over {MAX_PART_HEADER_BYTES} bytes"

    def _header_end(self) -> None:
        field, value = (bytes(h) for h in self._header)
        self._header = [bytearray(), bytearray()]
        if field.lower() == b"content-disposition":
            self._disposition = value

    def _headers_finished(self) -> None:
        if self.problem is None:
            self.problem = self._part_problem()

    def _part_problem(self) -> str | None:
        from python_multipart.multipart import parse_options_header

        if self._disposition is None:
            return "malformed multipart body: a part has no Content-Disposition"
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("latin-1")
        if name != self.file_field:
            return f"unexpected multipart field {name!r}: send the files as {self.file_field!r} parts"
        filename = options.get(b"filename")
        if filename is None:
            return (f"multipart part {self.file_field!r} must be a file upload (with a filename in "
                    f"its Content-Disposition), not a plain field")
        name_bytes = len(posixpath.basename(filename.decode("latin-1")).encode("latin-1"))
        if name_bytes > MAX_FILENAME_BYTES:  # BentoML names its temporary file after it
            return (f"a multipart filename of {name_bytes} bytes is too long: at most "
                    f"{MAX_FILENAME_BYTES} bytes (UTF-8)")
        return None

    def _end(self) -> None:
        self.ended = True


def _without_body(send: Callable) -> Callable:
    """A send that drops the body: HEAD's answer is GET's headers alone."""

    async def head_send(message: dict) -> None:
        if message["type"] == "http.response.body":
            message = {"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)}
        await send(message)

    return head_send


async def _send_refusal(send: Callable, refusal: Refusal, close: bool = False) -> None:
    """The error body; close=True when the request's body was not read (the connection ends)."""
    status, message, extra = refusal
    body = error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
