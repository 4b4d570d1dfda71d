"""The fixes to BentoML's internals (service/http.py) on the structures BentoML builds."""

from __future__ import annotations

import logging

import pytest
from _bentoml_impl.server.mount import PassiveMount
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from service.http import UNMATCHED_ROUTE, RouteLabels, patch_bentoml
from service.v2 import ProtocolError, _row_major


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


def test_client_errors_are_logged_in_one_line_and_faults_with_their_traceback(caplog):
    from _bentoml_impl.server import app

    patch_bentoml()
    request = Request({"type": "http", "method": "POST", "path": "/iris", "headers": [], "query_string": b""})

    class Record(BaseModel):
        width: float

    caplog.set_level(logging.INFO)
    for error in (ClientDisconnect(), RuntimeError("a bug")):
        try:
            raise error
        except Exception:
            app.log_exception(request)
    try:
        Record.model_validate({"width": "wide"})
    except ValidationError:
        app.log_exception(request)

    disconnect, fault, invalid = caplog.records
    assert disconnect.exc_info is None and "POST /iris answered 499" in disconnect.getMessage()
    assert fault.levelno == logging.ERROR and fault.exc_info is not None
    assert invalid.exc_info is None and invalid.levelno == logging.INFO
    assert invalid.getMessage() == "POST /iris answered 400: width: Input should be a valid number, unable to " \
                                   "parse string as a number"


def test_v2_data_is_flattened_without_recursion_and_depth_is_bounded():
    assert _row_major("x", [[1, 2], [3, [4]]], 3) == [1, 2, 3, 4]
    deep: list = [1]
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    with pytest.raises(ProtocolError, match="nested deeper than its 4-d shape"):
        _row_major("x", deep, 4)
