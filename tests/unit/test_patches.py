"""The fixes to library internals (service/patches.py) on the structures the libraries
build: each fails without its fix, and any other installed version fails the run."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
from pathlib import Path

import pytest
from _bentoml_impl.server.mount import PassiveMount
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from service import patches
from service.patches import UNMATCHED_ROUTE, RouteLabels


async def endpoint(request: Request) -> None: ...


def bentoml_like_app(tmp_path) -> Starlette:
    """API routes, a static mount, and a FastAPI app whose class views are an included router."""
    info = FastAPI()
    router = APIRouter()
    router.add_api_route("/v2/models/{name}/infer", endpoint, methods=["POST"])
    router.add_api_route("/v2/models/{name}/versions/{version}/ready", endpoint, methods=["GET"])
    info.include_router(router)
    return Starlette(routes=[Route("/iris", endpoint, methods=["POST"]), Route("/livez", endpoint),
                             Mount("/static_content", StaticFiles(directory=tmp_path)), PassiveMount("/", info)])


@pytest.mark.parametrize(("path", "label"), [
    ("/iris", "/iris"),
    ("/livez", "/livez"),
    ("/v2/models/iris/infer", "/v2/models/{name}/infer"),
    ("/v2/models/made-up-name/infer", "/v2/models/{name}/infer"),
    ("/v2/models/x/versions/123/ready", "/v2/models/{name}/versions/{version}/ready"),
    ("/static_content/any/file.css", "/static_content/{path:path}"),
    ("/docs", "/docs"),  # FastAPI's own page of the mounted app
    ("/v2/models/iris/infer/extra", UNMATCHED_ROUTE),
    ("/made/up", UNMATCHED_ROUTE),
    ("/iris/", UNMATCHED_ROUTE),
])
def test_every_path_gets_a_route_template_or_one_label(tmp_path, path, label):
    labels = RouteLabels(bentoml_like_app(tmp_path).routes)
    assert labels({"path": path, "root_path": ""}) == label


def test_the_patched_libraries_are_at_the_versions_the_fixes_were_written_for():
    """A version bump fails here (and the service refuses to start) until someone has read
    the new version's source against docs/library-patches.md and moved WRITTEN_FOR."""
    installed = {name: importlib.metadata.version(name) for name in patches.WRITTEN_FOR}
    assert installed == patches.WRITTEN_FOR
    patches.check_versions()


def test_another_version_of_a_patched_library_refuses_to_start(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(patches, "version", lambda name: "1.4.40" if name == "bentoml" else real(name))
    with pytest.raises(patches.UnpatchedVersion, match=r"written for bentoml 1\.4\.39, found bentoml 1\.4\.40"):
        patches.apply()


def _scheduled_timers(middleware_call, requests: int) -> int:
    """Timers still scheduled on the loop after `requests` requests through BentoML's
    TimeoutMiddleware (called as `middleware_call`) have been answered."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> int:
        middleware = TimeoutMiddleware(app, timeout=30)

        async def send(message):
            pass

        for _ in range(requests):
            await middleware_call(middleware, {"type": "http"}, None, send)
        loop = asyncio.get_running_loop()
        return sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]

    return asyncio.run(run())


def test_bentomls_timeout_middleware_leaves_no_timer_behind_once_patched():
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    patches.fix_bentoml_timeout_timers()
    patched = TimeoutMiddleware.__call__
    assert _scheduled_timers(patched.__wrapped__, 50) == 50, "BentoML's own middleware no longer leaks timers: " \
                                                             "drop the fix (docs/library-patches.md)"
    assert _scheduled_timers(patched, 50) == 0


def test_a_timed_out_request_still_gets_504():
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    patches.fix_bentoml_timeout_timers()
    sent = []

    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    async def send(message):
        sent.append(message)

    asyncio.run(TimeoutMiddleware(slow, timeout=0.05)({"type": "http"}, None, send))
    assert sent[0]["status"] == 504


def test_each_server_gets_its_own_metrics_folder_and_stopped_ones_are_removed(tmp_path):
    """Without the fix, ensure_prometheus_dir empties the whole folder: a running server's
    metrics (here the folder of this test's parent process) would be wiped."""
    from bentoml import serving

    patches.apply()
    base = tmp_path / "prometheus_multiproc_dir"
    running, stopped = base / str(os.getppid()), base / "999999999"
    for folder in (running, stopped):
        folder.mkdir(parents=True)
        (folder / "counter_1.db").write_bytes(b"metrics")
    mine = serving.ensure_prometheus_dir(str(base))
    assert Path(mine) == base / str(os.getpid()) and Path(mine).is_dir()
    assert (running / "counter_1.db").read_bytes() == b"metrics", "a running server's metrics are kept"
    assert not stopped.exists(), "a stopped server's folder is removed"
