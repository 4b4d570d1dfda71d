"""HTTP-level behaviour BentoML leaves open: client errors as JSON 4xx, body size limit,
content-type checks. Kept apart from the service so the endpoints stay thin."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse

from service.batching import Overloaded
from service.preprocessing import InvalidInput

logger = logging.getLogger("bentoml.service.model_serving")


class ModelsNotReady(Exception):
    """Models are still loading; /readyz says so too."""


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def client_errors(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Answer what a caller can fix with a 4xx JSON body, and overload with a short 503.

    BentoML logs every exception with a traceback and wraps 4xx bodies in a list; these
    are expected outcomes, so they are returned as responses instead of raised.
    """

    @functools.wraps(endpoint)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await endpoint(*args, **kwargs)
        except InvalidInput as exc:
            return error_response(400, str(exc))
        except Overloaded as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        except ModelsNotReady as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    return wrapper


CLIENT_CLOSED_REQUEST = 499
"""Status recorded (metrics, log) when the client hung up before its answer: the answer is
never sent, and it is not a server error (nginx's convention)."""


class RequestGuard:
    """ASGI middleware: refuse what a client can get wrong before BentoML parses anything.

    - bodies over the limit: 413, on the declared length and on the bytes received (a
      chunked upload cannot slip past);
    - a wrong content type: 415;
    - multipart bodies that are not files under `file_field`: 400 (BentoML answers 500
      for a malformed body, and it fetches a part without a filename as a URL);
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
    """A JSON error; close=True when the request's body was not read (the connection ends)."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


PATCHED_BENTOML = "1.4.39"
"""The BentoML version whose source the fixes below were written against and checked on."""

UNMATCHED_ROUTE = "unmatched"
"""The metrics' endpoint label of every request that matches no route."""


def patch_bentoml() -> None:
    """Apply the fixes to BentoML's internals below; call before the server builds its app."""
    import bentoml

    if bentoml.__version__ != PATCHED_BENTOML:
        logger.warning("not patching BentoML %s (the fixes in service/http.py were written for %s)",
                       bentoml.__version__, PATCHED_BENTOML)
        return
    fix_bentoml_timeout_timers()
    label_metrics_by_route()
    log_client_errors_briefly()


def label_metrics_by_route() -> None:
    """Label BentoML's request metrics with the route template, not the raw path.

    BentoML 1.4.39's RunnerTrafficMetricsMiddleware uses `scope["path"]` as the `endpoint`
    label, so every made-up path or V2 model name adds series to /metrics for good (600
    requests to unknown paths grew it from 39 KB to 2.5 MB). Here the middleware sees a
    copy of the scope whose path is the matched template (`/v2/models/{name}/infer`) or
    UNMATCHED_ROUTE, and the app behind it gets the request's own scope.
    """
    from bentoml._internal.server.http import instruments

    middleware = instruments.RunnerTrafficMetricsMiddleware
    if hasattr(middleware.__call__, "__wrapped__"):
        return
    original = middleware.__call__

    async def call(self: Any, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] == "/metrics":
            return await original(self, scope, receive, send)
        if not isinstance(self.app, _OwnScope):
            self.app = _OwnScope(self.app)
            self.route_labels = RouteLabels(getattr(scope.get("app"), "routes", []))
        labelled = {**scope, "path": self.route_labels(scope), _OwnScope.KEY: scope}
        await original(self, labelled, receive, send)

    call.__wrapped__ = original  # type: ignore[attr-defined]
    middleware.__call__ = call  # type: ignore[method-assign]


class _OwnScope:
    """Calls the app with the request's own scope instead of the metrics' relabelled copy."""

    KEY = "model_serving.own_scope"

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        await self.app(scope.get(self.KEY, scope), receive, send)


class RouteLabels:
    """The route template a request path matches (any method), from a bounded set of labels."""

    def __init__(self, routes: list[Any]) -> None:
        from starlette.routing import compile_path

        self.templates = [(compile_path(t)[0], t) for t in route_templates(routes)]
        self._label = functools.lru_cache(maxsize=4096)(self._match)

    def __call__(self, scope: dict) -> str:
        path = scope["path"]
        root_path = scope.get("root_path", "")
        return self._label(path.removeprefix(root_path) if root_path else path)

    def _match(self, path: str) -> str:
        return next((template for regex, template in self.templates if regex.match(path)), UNMATCHED_ROUTE)


def route_templates(routes: list[Any], prefix: str = "") -> list[str]:
    """Every route's path template, in matching order, through mounts and included routers."""
    from starlette.routing import Mount

    templates = []
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI's include_router (BentoML's asgi_app class views)
            templates += route_templates(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            templates += (route_templates(route.routes, prefix + route.path) if route.routes
                          else [f"{prefix}{route.path}/{{path:path}}"])
        elif isinstance(getattr(route, "path", None), str):
            templates.append(prefix + route.path)
    return templates


def log_client_errors_briefly() -> None:
    """Log a client's mistake in one line; keep tracebacks for real faults.

    BentoML 1.4.39 calls `log_exception` (an ERROR with the traceback, about 1.9 KB) for
    every exception of an API call, including its own validation errors (answered 400)
    and a client hanging up mid-body: a fuzzing run wrote 5.4 MB of such tracebacks.
    """
    from _bentoml_impl.server import app

    original = app.log_exception
    if hasattr(original, "__wrapped__"):
        return

    def log_exception(request: Any, exc_info: Any = True) -> None:
        error = sys.exc_info()[1]
        status = client_error_status(error)
        if status is None:
            original(request, exc_info)
            return
        logger.info("%s %s answered %d: %s", request.method, request.url.path, status, one_line(error))

    log_exception.__wrapped__ = original  # type: ignore[attr-defined]
    app.log_exception = log_exception


def one_line(error: BaseException | None, limit: int = 300) -> str:
    """A short description of a client's error, without the input it sent."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def client_error_status(error: BaseException | None) -> int | None:
    """The status BentoML answers for an error the client caused, or None for a fault."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    from starlette.requests import ClientDisconnect

    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, ClientDisconnect):
        return CLIENT_CLOSED_REQUEST
    if isinstance(error, BentoMLException) and error.error_code < 500:
        return int(error.error_code)
    return None


def fix_bentoml_timeout_timers() -> None:
    """Cancel BentoML's per-request timeout timer when the request ends.

    BentoML 1.4.39's TimeoutMiddleware schedules `loop.call_later(timeout, ...)` for every
    request and never cancels it, so each request leaves a live timer, future and context
    behind for `traffic.timeout` seconds: at 1,700 requests/s and a 30 s timeout, about
    150k objects that every full garbage collection walks (measured: full-GC pauses grew
    to 100 ms and p99 followed). This is the same middleware with the timer cancelled.
    """
    import asyncio

    from bentoml._internal.server.http import traffic

    original = traffic.TimeoutMiddleware.__call__
    if hasattr(original, "__wrapped__"):
        return

    async def call(self: Any, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: dict) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        # An app that fails before sending anything must not wait out the timeout.
        task.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        except TimeoutError:
            if task.cancel():
                await error_response(504, f"Not able to process the request in {self.timeout} seconds")(
                    scope, receive, send)
        else:
            await task
        finally:
            timer.cancel()

    call.__wrapped__ = original  # type: ignore[attr-defined]
    traffic.TimeoutMiddleware.__call__ = call  # type: ignore[method-assign]


class JsonNotFound:
    """ASGI middleware: a path that matches no route gets a JSON 404 like every other error
    (Starlette's router answers a text/plain "Not Found")."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def json_send(message: dict) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 404:
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/plain"):
                    replaced = True
                    return
            if replaced:
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    await _send_json(send, 404, f"no route for {scope['method']} {scope['path']}")
                return
            await send(message)

        await self.app(scope, receive, json_send)
