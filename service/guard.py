"""Refuse what a client can get wrong before BentoML parses anything: too large a body
(413), a wrong content type (415), a multipart body that is not files under `images`
(400), and a client that hangs up mid-body (recorded as 499, not BentoML's 500)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from service.errors import CLIENT_CLOSED_REQUEST, error_body

MAX_FILENAME_BYTES = 200
"""Longest multipart filename taken: BentoML writes each upload to a temporary file whose
name ends with it, and a name over the file system's 255 bytes failed with a 500."""


class RequestGuard:
    """ASGI middleware: refuse what a client can get wrong before BentoML parses anything.

    - bodies over the limit: 413, on the declared length and on the bytes received (a
      chunked upload cannot slip past);
    - a wrong content type: 415;
    - multipart bodies that are not files under `file_field`, or whose filenames are over
      MAX_FILENAME_BYTES: 400 (BentoML answers 500 for a malformed body or too long a
      filename, and it fetches a part without a filename as a URL);
    - a client that hangs up mid-body: recorded as 499 instead of BentoML's 500.
    """

    def __init__(self, app: Any, max_body_bytes: int, content_types: dict[str, str],
                 file_field: str = "images", max_parts: int = 1000) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.content_types = content_types  # route -> required media type
        self.file_field = file_field
        self.max_parts = max_parts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        required = self.content_types.get(scope["path"].rstrip("/") or "/")
        if required is not None:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != required:
                await _send_json(send, 415, f"{scope['path']} takes {required}, "
                                            f"not {media_type or 'a body without Content-Type'}", close=True)
                return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_json(send, 413, f"request body of {declared} bytes is over the limit of "
                                        f"{self.max_body_bytes} bytes", close=True)
            return  # unread body: the connection is closed after the answer

        received = 0
        too_large = disconnected = False

        async def limited_receive() -> dict:
            nonlocal received, too_large, disconnected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            elif message["type"] == "http.disconnect":
                disconnected = True
            return message

        app_receive = limited_receive
        if required == "multipart/form-data":  # checked whole, then handed on
            body = await _read_body(limited_receive)
            problem = None if too_large or disconnected else await self._multipart_problem(scope, body)
            if problem is not None:
                await _send_json(send, 400, problem)
                return
            app_receive = _replay(body, limited_receive)

        started = False

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if too_large:  # replace whatever the app answers to a cut-off body
                if not started:
                    started = True
                    await _send_json(send, 413, f"request body is over the limit of {self.max_body_bytes} bytes",
                                     close=True)
                return
            if disconnected and message["type"] == "http.response.start":
                message = {**message, "status": CLIENT_CLOSED_REQUEST}  # nobody will read it
            started = True
            await send(message)

        if not (too_large or disconnected):
            await self.app(scope, app_receive, guarded_send)
        if too_large and not started:
            await _send_json(send, 413, f"request body is over the limit of {self.max_body_bytes} bytes", close=True)
        elif disconnected and not started:
            await _send_json(guarded_send, CLIENT_CLOSED_REQUEST, "the client closed the connection")

    async def _multipart_problem(self, scope: dict, body: bytes) -> str | None:
        """Why this multipart body is not a list of files under `file_field`, or None."""
        from starlette.datastructures import Headers, UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream() -> Any:
            yield body

        parser = MultiPartParser(Headers(scope=scope), stream(), max_files=self.max_parts, max_fields=self.max_parts)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            return f"malformed multipart body: {exc.message}"
        try:
            if len(form.multi_items()) > self.max_parts:
                return f"at most {self.max_parts} parts per multipart body, got {len(form.multi_items())}"
            for name, value in form.multi_items():
                if name != self.file_field:
                    return f"unexpected multipart field {name!r}: send the files as {self.file_field!r} parts"
                if not isinstance(value, UploadFile):
                    return (f"multipart part {self.file_field!r} must be a file upload (with a filename in "
                            f"its Content-Disposition), not a plain field")
                name_bytes = len(posixpath.basename(value.filename or "").encode())
                if name_bytes > MAX_FILENAME_BYTES:  # BentoML names its temporary file after it
                    return (f"a multipart filename of {name_bytes} bytes is too long: at most "
                            f"{MAX_FILENAME_BYTES} bytes (UTF-8)")
            return None
        finally:
            await form.close()


async def _read_body(receive: Callable) -> bytes:
    """The whole request body; stops early if receive reports a disconnect."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    """A receive that gives the already-read body once, then defers to the real one."""
    pending = True

    async def replay() -> dict:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Callable, status: int, message: str, close: bool = False) -> None:
    """The error body; close=True when the request's body was not read (the connection ends)."""
    body = error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
