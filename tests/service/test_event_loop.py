"""No request can hold the event loop (service/decoding.py, service/preprocessing.py):
while costly or hostile pictures are being read, /livez answers within a second."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.slow

LIVENESS_BUDGET_S = 1.0


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def while_polling_livez(server, work: Callable[[], None], seconds: float = 3.0) -> list[float]:
    """Run `work` in four threads for `seconds`; the /livez latencies seen meanwhile."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []

    def client() -> None:
        while time.monotonic() < stop:
            work()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    while any(thread.is_alive() for thread in threads):
        started = time.monotonic()
        assert requests.get(f"{server.url}/livez", timeout=10).status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    return latencies


def test_livez_answers_while_large_legal_pictures_are_decoded(server):
    # 16 megapixels each, the most one image may hold: ~0.2 s of decoding and resizing.
    rng = np.random.default_rng(0)
    big = png(Image.fromarray(np.kron(rng.integers(0, 255, (64, 64), dtype=np.uint8), np.ones((64, 64), np.uint8))))
    answers: list[int] = []

    def work() -> None:
        answers.append(requests.post(f"{server.url}/malaria", files=[("images", ("big.png", big, "image/png"))],
                                     timeout=60).status_code)

    latencies = while_polling_livez(server, work)
    assert answers and set(answers) <= {200, 503}, answers  # 503: shed by the batcher, never an error
    assert max(latencies) < LIVENESS_BUDGET_S, latencies


def multi_page_tiff(pages: int) -> bytes:
    """A little-endian TIFF of `pages` 1x1 grey pages sharing one pixel (Pillow's own writer
    takes minutes for 50,000 pages)."""
    entry_count, pixel_at = 8, 8
    ifd_size = 2 + entry_count * 12 + 4
    out = [b"II*\x00", struct.pack("<I", 9), b"\x80"]  # header, first IFD at 9, the pixel at 8
    for page in range(pages):
        start = 9 + page * ifd_size
        following = start + ifd_size if page < pages - 1 else 0
        entries = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, pixel_at),
                   (278, 3, 1), (279, 4, 1)]
        out.append(struct.pack("<H", entry_count) + b"".join(struct.pack("<HHII", tag, kind, 1, value)
                                                            for tag, kind, value in entries)
                   + struct.pack("<I", following))
    return b"".join(out)


def test_a_tiff_of_many_pages_is_refused_at_the_second_page(server):
    tiff = multi_page_tiff(50_000)  # 5.7 MB; counting its pages took 15 s of event loop
    started = time.monotonic()
    response = requests.post(f"{server.url}/malaria", files=[("images", ("pages.tif", tiff, "image/tiff"))])
    assert response.status_code == 400 and "more than one frame" in response.json()["error"]
    assert time.monotonic() - started < 5


def test_a_strip_of_sixteen_million_pixels_is_refused_before_decoding(server):
    strip = png(Image.new("L", (1, 4096 * 4096)))  # 43 KB, within the pixel limit: 1.8 s to decode
    started = time.monotonic()
    response = requests.post(f"{server.url}/malaria/base64", json={"images": [base64.b64encode(strip).decode()]})
    assert response.status_code == 400, response.text
    assert "one side may be at most 16 times the other" in response.json()["error"]
    assert time.monotonic() - started < 1
