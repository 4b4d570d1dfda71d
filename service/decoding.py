"""The images of a request become rows off the event loop, their cost bounded first.

Decoding a picture is the one step of a request whose cost the client chooses (a 43 KB
PNG can declare 16 million pixels). On the event loop it stalled every other request,
`/livez` included, for seconds. Here:

- a call whose files are tiny (at most INLINE_BYTES together) is opened on the loop
  (headers only: format, size, frames) and, if it declares at most INLINE_PIXELS, decoded
  there too: a thread hop would cost the small-image routes more than the decoding;
- everything else is opened, checked and decoded on one of DECODE_THREADS threads, so at
  most that many pictures are decoded at once (each at most MAX_IMAGE_PIXELS, 64 MB in
  Pillow's widest modes: the decoded memory is bounded whatever the concurrency).

Pillow's decoders release the GIL, so the loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from service.preprocessing import images_to_rows, opened_images, rows_of_images
from service.specs import ModelSpec

DECODE_THREADS = int(os.environ.get("IMAGE_DECODE_THREADS", 2))
INLINE_BYTES = 64 * 1024
"""Files of one call smaller than this together are opened on the event loop (< 1 ms)."""
INLINE_PIXELS = 256 * 256
"""Pixels of one call decoded on the event loop (a 128x128 cell takes ~0.2 ms)."""

_executor: ThreadPoolExecutor | None = None


def _decoder() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:  # made on first use: no threads at import
        _executor = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")
    return _executor


async def image_rows(spec: ModelSpec, files: Sequence[bytes | Path]) -> np.ndarray:
    """The model's rows for the image files of one call, given as bytes or as uploaded
    files on disk (read in the decoder thread); InvalidInput names the image."""
    loop = asyncio.get_running_loop()
    if sum(len(f) if isinstance(f, bytes) else f.stat().st_size for f in files) <= INLINE_BYTES:
        images = opened_images([_read(f) for f in files])
        if sum(image.width * image.height for image in images) <= INLINE_PIXELS:
            return rows_of_images(spec, images)
        return await loop.run_in_executor(_decoder(), rows_of_images, spec, images)
    return await loop.run_in_executor(_decoder(), lambda: images_to_rows(spec, [_read(f) for f in files]))


def _read(file: bytes | Path) -> bytes:
    return file if isinstance(file, bytes) else file.read_bytes()
