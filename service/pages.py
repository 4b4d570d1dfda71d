"""The service's own pages: the model UI at /ui and Swagger UI at /, from files in the
bento (service/ui/), with nothing loaded from another host.

BentoML's stock page at / loads Google Tag Manager (a script and a noscript iframe from
googletagmanager.com) even with BENTOML_DO_NOT_TRACK=True, and Swagger UI's default
online validator would fetch a badge from validator.swagger.io: this / uses BentoML's own
Swagger UI files (/static_content/) with the validator off. Each page is sent with a
Content-Security-Policy that allows this host only, so a page that tried to load anything
else would be stopped by the browser (tests/ui/ check both in Chromium).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.responses import Response

from service.errors import NotFound

UI_FOLDER = Path(__file__).parent / "ui"
ASSETS = {"ui.js": "text/javascript", "ui.css": "text/css", "examples.json": "application/json",
          "home.css": "text/css", "swagger-init.js": "text/javascript"}
"""The files /ui/NAME serves (and nothing else: no path from the request reaches the disk)."""
UI_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
             "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
SWAGGER_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                  "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
"""Swagger UI sets style attributes from its scripts: 'unsafe-inline' for styles only."""


def _file(name: str, media_type: str, policy: str | None = None) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    if policy is not None:
        headers["Content-Security-Policy"] = policy
    return Response((UI_FOLDER / name).read_bytes(), media_type=media_type, headers=headers)


async def ui_page() -> Response:
    return _file("index.html", "text/html; charset=utf-8", UI_POLICY)


async def ui_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no file /ui/{name[:100]}")
    return _file(name, media_type)


async def home_page() -> Response:
    return _file("home.html", "text/html; charset=utf-8", SWAGGER_POLICY)


def add_pages(app: Any) -> None:
    """GET /ui, /ui/NAME and / on the service's metadata app (not in the API document)."""
    app.get("/", include_in_schema=False)(home_page)
    app.get("/ui", include_in_schema=False)(ui_page)
    app.get("/ui/{name}", include_in_schema=False)(ui_asset)
