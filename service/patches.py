"""Fixes to BentoML's internals where it has no public hook (docs/library-patches.md).

Each fix was written against one version's source: `apply()` refuses to start on another
version (a bump must be looked at, not found out in production), and
tests/unit/test_patches.py fails without each fix and on any other installed version.
uvicorn's connection limits (service/connections.py) follow the same rule.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from service.errors import error_response

WRITTEN_FOR = {"bentoml": "1.4.39", "uvicorn": "0.55.0"}
"""The version of each patched library whose source the fixes were written against."""


class UnpatchedVersion(RuntimeError):
    """A patched library is at another version than its fixes were written for."""


def check_versions() -> None:
    """Raise unless every patched library is at the version its fixes were written for."""
    found = {name: version(name) for name in WRITTEN_FOR}
    wrong = {name: v for name, v in found.items() if v != WRITTEN_FOR[name]}
    if wrong:
        raise UnpatchedVersion(
            "the fixes to library internals were written for "
            + ", ".join(f"{name} {WRITTEN_FOR[name]}" for name in wrong)
            + ", found " + ", ".join(f"{name} {v}" for name, v in wrong.items())
            + ": see docs/library-patches.md for what each fix does and how to check it on a new version")


def apply() -> None:
    """Check the versions, then apply every fix; call before the server builds its app."""
    from service.connections import guard_connections

    check_versions()
    fix_bentoml_timeout_timers()
    label_metrics_by_route()
    own_metrics_folder()
    guard_connections()


UNMATCHED_ROUTE = "unmatched"
"""The metrics' endpoint label of every request that matches no route."""


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


def own_metrics_folder() -> None:
    """Give each `bentoml serve` its own Prometheus folder: BENTOML_HOME/prometheus_multiproc_dir/PID.

    BentoML 1.4.39's serve_http empties $BENTOML_HOME/prometheus_multiproc_dir as it starts
    (`bentoml.serving.ensure_prometheus_dir`), so a second server on the same home wiped
    the metrics of the one already running, and both then wrote to the same files. Here
    the serving process (the arbiter; the CLI imports the service before serve_http) gets
    a folder named after its pid, and the folders of servers no longer running are removed
    when the next one starts. The workers find the folder in PROMETHEUS_MULTIPROC_DIR, as
    before.
    """
    from bentoml import serving

    if getattr(serving.ensure_prometheus_dir, "one_folder_per_server", False):
        return
    original = serving.ensure_prometheus_dir

    @functools.wraps(original)
    def ensure(directory: str | None = None, clean: bool = True, use_alternative: bool = True) -> str:
        from bentoml._internal.configuration.containers import BentoMLContainer

        base = Path(directory or BentoMLContainer.prometheus_multiproc_dir.get())
        remove_folders_of_stopped_servers(base)
        return original(str(base / str(os.getpid())), clean, use_alternative)

    ensure.one_folder_per_server = True  # type: ignore[attr-defined]
    serving.ensure_prometheus_dir = ensure


def remove_folders_of_stopped_servers(base: Path) -> None:
    """Remove BASE/PID folders whose process is gone (files of BentoML's own layout are left)."""
    if not base.is_dir():
        return
    for folder in base.iterdir():
        if folder.is_dir() and folder.name.isdigit() and not _running(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
