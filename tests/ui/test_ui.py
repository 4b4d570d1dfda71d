"""The page at /ui and Swagger UI at /, in a real browser: headless Chromium (Debian's
`chromium`, driven by Playwright) against a real server. A digit drawn with the mouse,
real cells uploaded, iris and kobe submitted, a corrupt file's message, API keys; and
neither page loads anything from another host."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("UI_SCREENSHOTS")
"""A folder: the tests leave a screenshot of the page there (README's come from here)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"NO CHROMIUM at {CHROMIUM}: apt-get install chromium (.ci/run does, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


class Visit:
    """A page of a browser context, remembering every host it asked for."""

    def __init__(self, browser: object, url: str, viewport: dict | None = None) -> None:
        self.context = browser.new_context(viewport=viewport or {"width": 1100, "height": 900})  # type: ignore[attr-defined]
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.console_errors: list[str] = []
        self.failed: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))
        self.page.on("response", lambda response: response.status >= 400 and self.failed.append(
            f"{response.status} {response.url}"))
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.goto(url)

    def other_hosts(self, server_url: str) -> set[str]:
        own = urlsplit(server_url).netloc
        return {urlsplit(u).netloc for u in self.requested if urlsplit(u).scheme in ("http", "https")} - {own}

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ui(browser, server) -> Iterator[Visit]:
    visit = Visit(browser, server.url + "/ui")
    visit.page.get_by_test_id("ui-iris-submit").wait_for()
    yield visit
    visit.close()


def label(visit: Visit, model: str) -> str:
    locator = visit.page.get_by_test_id(f"ui-{model}-label")
    locator.wait_for(timeout=20_000)
    return locator.inner_text()


def test_every_model_has_a_panel_with_its_hooks(ui, server):
    models = [m["name"] for m in requests.get(server.url + "/models", timeout=10).json()["models"]]
    for name in models:
        for hook in ("input", "submit"):
            assert ui.page.get_by_test_id(f"ui-{name}-{hook}").count() == 1, (name, hook)
    ui.page.get_by_test_id("ui-malaria-drift").wait_for()
    assert not ui.other_hosts(server.url) and not ui.failed, ui.failed
    unlabelled = ui.page.evaluate("""() => Array.from(document.querySelectorAll('input, select, button, canvas'))
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML.slice(0, 80))""")
    assert not unlabelled, unlabelled


def test_the_keyboard_reaches_every_control(ui):
    """Tab moves through the key field, then each panel's controls in order."""
    page = ui.page
    reached = set()
    for _ in range(120):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.dataset.testid || document.activeElement.id"))
    for hook in ("ui-api-key", "ui-iris-submit", "ui-malaria-input", "ui-kobe-submit", "ui-digits-submit"):
        assert hook in reached, hook
    assert "ui-iris-sepal_length" in reached


def test_iris_sliders_submit_and_the_answer_is_the_json_routes(ui, server):
    page = ui.page
    values = {"sepal_length": "6.3", "sepal_width": "3.3", "petal_length": "6", "petal_width": "2.5"}
    for name, value in values.items():
        page.locator(f"#ui-iris-{name}").fill(value)
    page.get_by_test_id("ui-iris-submit").click()
    shown = label(ui, "iris")
    record = {name: float(value) for name, value in values.items()}
    expected = requests.post(server.url + "/iris", json={"records": [record]}, timeout=10).json()["predictions"][0]
    assert shown == expected["label"]
    bars = page.get_by_test_id("ui-iris-probabilities").locator("li")
    assert bars.count() == 3
    assert f"{100 * expected['probabilities'][shown]:.1f}%" in bars.first.inner_text()
    meta = page.get_by_test_id("ui-iris-meta").inner_text()
    assert expected["model"] in meta and " ms" in meta


def test_kobe_form_is_prefilled_with_a_real_row_and_answers(ui, server):
    page = ui.page
    assert page.locator("#ui-kobe-action_type").input_value() == "Jump Shot"
    assert page.locator("#ui-kobe-action_type option").count() > 20
    page.get_by_test_id("ui-kobe-submit").click()
    row = json.loads((PROJECT / "service" / "ui" / "examples.json").read_text())["kobe"]
    expected = requests.post(server.url + "/kobe", json={"records": [row]}, timeout=10).json()["predictions"][0]
    assert label(ui, "kobe") == expected["label"]


def test_a_digit_drawn_with_the_mouse_is_read(ui, server):
    page = ui.page
    canvas = page.get_by_test_id("ui-digits-input")
    box = canvas.bounding_box()
    x, top, bottom = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15, box["y"] + box["height"] * 0.85
    page.mouse.move(x, top)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x, top + (bottom - top) * step / 20)
    page.mouse.up()
    drawn = page.evaluate("document.querySelector('[data-testid=ui-digits-input]').toDataURL('image/png')")
    page.get_by_test_id("ui-digits-submit").click()
    shown = label(ui, "digits")
    if SCREENSHOTS:
        ui.page.get_by_test_id("ui-digits").screenshot(path=str(Path(SCREENSHOTS) / "ui-digits.png"))
    png = drawn.split(",", 1)[1]
    expected = requests.post(server.url + "/digits/base64", json={"images": [png]}, timeout=10).json()
    assert shown == expected["predictions"][0]["label"]


def test_real_cells_uploaded_together_match_the_json_route(ui, server, malaria_image_paths):
    cells = [malaria_image_paths["Parasitized"][0], malaria_image_paths["Uninfected"][0],
             PROJECT / "examples" / "cells" / "cell2.jpg"]
    ui.page.get_by_test_id("ui-malaria-input").set_input_files([str(p) for p in cells])
    ui.page.get_by_test_id("ui-malaria-submit").click()
    shown = label(ui, "malaria").split(", ")
    files = [("images", (p.name, p.read_bytes())) for p in cells]
    expected = requests.post(server.url + "/malaria", files=files, timeout=30).json()["predictions"]
    assert shown == [p["label"] for p in expected]
    assert ui.page.get_by_test_id("ui-malaria-image").count() == 3
    if SCREENSHOTS:
        ui.page.get_by_test_id("ui-malaria").screenshot(path=str(Path(SCREENSHOTS) / "ui-malaria.png"))


def test_a_corrupt_file_shows_the_services_message(ui, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    ui.page.get_by_test_id("ui-malaria-input").set_input_files(str(broken))
    ui.page.get_by_test_id("ui-malaria-submit").click()
    error = ui.page.get_by_test_id("ui-malaria-error")
    error.wait_for(timeout=20_000)
    assert error.inner_text().startswith("400: images[0]")


def test_drift_verdicts_are_shown(ui):
    for model in ("iris", "kobe"):
        ui.page.get_by_test_id(f"ui-{model}-drift").wait_for(timeout=20_000)
        assert ui.page.get_by_test_id(f"ui-{model}-drift").inner_text().startswith("Drift: ")


def test_readable_on_a_phone(browser, server):
    visit = Visit(browser, server.url + "/ui", viewport={"width": 390, "height": 844})
    try:
        visit.page.get_by_test_id("ui-iris-submit").wait_for()
        width = visit.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    finally:
        visit.close()


def test_with_api_keys_the_key_field_unlocks_the_page(browser, keyed_server):
    visit = Visit(browser, keyed_server.url + "/ui")
    try:
        page = visit.page
        page.get_by_test_id("ui-models-error").wait_for()
        assert "401" in page.get_by_test_id("ui-models-error").inner_text()
        page.get_by_test_id("ui-api-key").fill(keyed_server.api_keys["all"])
        page.get_by_role("button", name="Use key").click()
        page.get_by_test_id("ui-iris-submit").click()
        assert label(visit, "iris")
        assert page.evaluate("sessionStorage.length") == 1 and page.evaluate("localStorage.length") == 0
    finally:
        visit.close()


def test_swagger_ui_at_root_loads_nothing_from_another_host(browser, server):
    visit = Visit(browser, server.url + "/")
    try:
        visit.page.locator(".swagger-ui .info .title").wait_for(timeout=20_000)
        visit.page.wait_for_load_state("networkidle")
        assert "/ui" in visit.page.locator(".try").inner_text()
        assert not visit.other_hosts(server.url), visit.requested
        assert not any("googletagmanager" in u for u in visit.requested)
        assert visit.page.locator("iframe").count() == 0
    finally:
        visit.close()


def test_pages_are_small_and_strict(server):
    total = 0
    for path in ("/ui", "/ui/ui.js", "/ui/ui.css", "/ui/examples.json"):
        answer = requests.get(server.url + path, timeout=10)
        assert answer.status_code == 200, path
        total += len(answer.content)
    assert total < 150 * 1024
    policy = requests.get(server.url + "/ui", timeout=10).headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "http" not in policy
    assert requests.get(server.url + "/ui/../service.py", timeout=10).status_code == 404
    assert requests.get(server.url + "/ui/pages.py", timeout=10).status_code == 404


def test_the_document_has_each_key_once(server):
    """JSON parsers forgive a repeated key (the last wins); Swagger UI's parser refuses the
    document. BentoML keyed some statuses as integers, and "400" came out twice."""
    def once(pairs: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    json.loads(requests.get(server.url + "/docs.json", timeout=10).text, object_pairs_hook=once)


def test_the_shadow_report_is_shown_when_a_model_is_shadowed(browser, shadowed_server):
    visit = Visit(browser, shadowed_server.url + "/ui")
    try:
        visit.page.get_by_test_id("ui-iris-submit").click()
        label(visit, "iris")
        report = visit.page.get_by_test_id("ui-iris-shadow")
        report.wait_for(timeout=20_000)
        assert report.inner_text().startswith("Shadow iris:") and "label agreement" in report.inner_text()
    finally:
        visit.close()


def test_the_document_describes_this_service(server):
    info = requests.get(server.url + "/docs.json", timeout=10).json()["info"]
    assert info["title"] == "model-serving" and "[/ui](/ui)" in info["description"]
    assert "http" not in info["description"] and "contact" not in info
    for path in ("/docs", "/redoc", "/openapi.json"):  # FastAPI's pages load scripts from a CDN
        assert requests.get(server.url + path, timeout=10).status_code == 404, path
