"""The service's one error type and its one body: `{"error": "...", "detail": ...}`.

Every refusal, whatever produced it, reaches the client in this shape: a route raises
ServiceError (or a subclass: InvalidInput, Overloaded, NotReady), and `answer_errors` (typed
routes), the V2 app's and the metadata app's exception handlers, and `JsonErrors` (what the
frameworks answer themselves: unmatched paths, 405, BentoML's own 4xx/5xx) turn it into
this body. Raw-socket answers (service/connections.py) and the request guard (service/guard.py)
build theirs with `error_body` too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from service import logs

CLIENT_CLOSED_REQUEST = logs.CLIENT_CLOSED_REQUEST
"""Status recorded (metrics, log) when the client hung up before its answer: the answer is
never sent, and it is not a server error (nginx's convention)."""


class ServiceError(Exception):
    """A request the service refuses: answered with `status` and the error body."""

    status = 500

    def __init__(self, message: str, status: int | None = None, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers

    def response(self) -> Response:
        return error_response(self.status, self.message, self.detail, self.headers)


class InvalidInput(ServiceError, ValueError):
    """The input breaks the model's schema, or is not what the route takes (400)."""

    status = 400


class NotFound(ServiceError):
    """An unknown model, version or path (404)."""

    status = 404


class NotReady(ServiceError):
    """The models are still loading, or failed to load: /readyz says so too (503)."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class Overloaded(ServiceError):
    """The request would miss its model's max_latency_ms: shed it (503 with Retry-After)."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


def error_body(message: str, detail: Any = None) -> bytes:
    """The one error body, encoded."""
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return json.dumps(body).encode()


def error_response(status: int, message: str, detail: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message, detail), status_code=status, headers=headers, media_type="application/json")


def answer_errors(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A typed route's ServiceError becomes its response.

    Returned rather than raised: BentoML logs every exception an API raises with a
    traceback, and these are expected outcomes, not faults.
    """

    @functools.wraps(endpoint)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await endpoint(*args, **kwargs)
        except ServiceError as exc:
            return exc.response()

    return wrapper


async def _service_error(request: Any, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return exc.response()


async def _http_exception(request: Any, exc: Exception) -> Response:
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    message = framework_message(exc.status_code, str(exc.detail), request.method, request.url.path)
    return error_response(exc.status_code, message, headers=exc.headers)


def exception_handlers() -> dict[Any, Callable[..., Awaitable[Response]]]:
    """For a Starlette or FastAPI app of the service: its errors in the one body."""
    from starlette.exceptions import HTTPException

    return {ServiceError: _service_error, HTTPException: _http_exception}


class JsonErrors:
    """ASGI middleware: an error the frameworks answer as text (Starlette's "Not Found" and
    "Method Not Allowed", BentoML's probes and its own 4xx/5xx) gets the error body, with
    the status and headers it had. JSON answers pass untouched, streamed as they come.

    It sees every answer, so it logs each refusal in one line with its route
    (service/logs.py), unless BentoML logged it already; a 500 is logged by BentoML with
    its traceback.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict | None = None
        text: list[bytes] = []
        status = 0
        seen = bytearray()  # the start of an error's JSON body, for the log line
        answer_logged: dict[str, bool] = {}
        logs.ANSWER_LOGGED.set(answer_logged)

        async def json_send(message: dict) -> None:
            nonlocal held, status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 400 and dict(message.get("headers", [])).get(
                        b"content-type", b"").startswith(b"text/"):
                    held = message  # rewritten once its text is complete
                    return
            elif held is not None and message["type"] == "http.response.body":
                text.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = await _send_rewritten(send, held, b"".join(text), scope)
                _log(scope, status, body, answer_logged)
                return
            elif status >= 400 and message["type"] == "http.response.body":
                seen.extend(message.get("body", b"")[: 4096 - len(seen)])
                if not message.get("more_body", False):
                    _log(scope, status, bytes(seen), answer_logged)
            await send(message)

        await self.app(scope, receive, json_send)


def _log(scope: dict, status: int, body: bytes, answer_logged: dict[str, bool]) -> None:
    if status == 500 or answer_logged.get("logged"):
        return
    try:
        message = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")
    logs.log_answer(scope["method"], scope["path"], status, " ".join(message.split()))


def framework_message(status: int, text: str, method: str, path: str) -> str:
    """A framework's terse error text, said in the service's words where it is a stock phrase."""
    if status == 404 and text == "Not Found":
        return f"no route for {method} {path}"
    if status == 405 and text == "Method Not Allowed":
        return f"{path} does not take {method}"
    return text or f"HTTP {status}"


async def _send_rewritten(send: Callable, start: dict, text: bytes, scope: dict) -> bytes:
    status = start["status"]
    message = framework_message(status, text.decode("utf-8", "replace").strip(), scope["method"], scope["path"])
    body = error_body(message)
    kept = [(k, v) for k, v in start.get("headers", [])
            if k.lower() not in (b"content-type", b"content-length")]
    await send({"type": "http.response.start", "status": status,
                "headers": [*kept, (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})
    return body
