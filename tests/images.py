"""One picture in many encodings, for the metamorphic image tests (unit and HTTP).

Every encoder takes an 8-bit grayscale picture (the malaria cells and the rendered digits
both are) and returns a file that shows the same picture. The lossless ones must give the
model exactly the same input; the lossy ones (JPEG) the same within a stated tolerance.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
# What a camera stores for each EXIF orientation: the displayed picture transformed so that
# the tag's transformation (EXIF 2.3, "Orientation") turns it back into the displayed picture.
STORED_FOR_ORIENTATION: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # shown after a 90 degree clockwise turn: stored turned anticlockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def render_digit(pixels: np.ndarray, scale: int = 4) -> Image.Image:
    """An sklearn digit (0-16, ink high) as a dark-on-light 8-bit grayscale picture."""
    ink = np.kron(pixels.reshape(8, 8), np.ones((scale, scale))) * 255 / 16
    return Image.fromarray((255 - ink).round().astype(np.uint8), mode="L")


def rotated_with_tag(gray: Image.Image, orientation: int, fmt: str = "PNG", **options) -> bytes:
    """The picture stored as a camera would for `orientation`, with the tag that undoes it."""
    transpose = STORED_FOR_ORIENTATION[orientation]
    stored = gray if transpose is None else gray.transpose(transpose)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(stored, fmt, exif=exif, **options)


def _gray_palette(gray: Image.Image) -> Image.Image:
    palette = Image.fromarray(np.asarray(gray), mode="P")
    palette.putpalette([level for value in range(256) for level in (value, value, value)])
    return palette


def _sixteen_bit(gray: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)  # mode I;16, full 16-bit range


def _sixteen_bit_big_endian(gray: Image.Image) -> Image.Image:
    values = (np.asarray(gray).astype(np.uint16) * 257).astype(">u2")
    return Image.frombytes("I;16B", gray.size, values.tobytes())


def _opaque(gray: Image.Image, mode: str) -> Image.Image:
    return gray.convert(mode)  # the alpha channel Pillow adds is 255 everywhere


LOSSLESS: dict[str, Callable[[Image.Image], bytes]] = {
    "PNG 8-bit gray": lambda g: encode(g),
    "PNG 16-bit gray": lambda g: encode(_sixteen_bit(g)),
    "PNG RGB": lambda g: encode(g.convert("RGB")),
    "PNG palette": lambda g: encode(_gray_palette(g)),
    "PNG RGBA opaque": lambda g: encode(_opaque(g, "RGBA")),
    "PNG LA opaque": lambda g: encode(_opaque(g, "LA")),
    "TIFF 8-bit gray": lambda g: encode(g, "TIFF", compression="tiff_lzw"),
    "TIFF 16-bit gray": lambda g: encode(_sixteen_bit(g), "TIFF"),
    "TIFF 16-bit big-endian": lambda g: encode(_sixteen_bit_big_endian(g), "TIFF"),
    "TIFF 32-bit float (0-1)": lambda g: encode(Image.fromarray(np.asarray(g, dtype=np.float32) / 255), "TIFF"),
    "TIFF CMYK": lambda g: encode(g.convert("RGB").convert("CMYK"), "TIFF"),
    "BMP gray": lambda g: encode(g, "BMP"),
    "BMP RGB": lambda g: encode(g.convert("RGB"), "BMP"),
    "WebP lossless": lambda g: encode(g.convert("RGB"), "WEBP", lossless=True),
    "WebP lossless RGBA opaque": lambda g: encode(_opaque(g, "RGBA"), "WEBP", lossless=True),
    "GIF": lambda g: encode(g, "GIF"),
    "PNG EXIF-rotated (6)": lambda g: rotated_with_tag(g, 6),
    "PNG EXIF-rotated (8)": lambda g: rotated_with_tag(g, 8),
    "TIFF EXIF-mirrored (5)": lambda g: rotated_with_tag(g, 5, "TIFF"),
}

LOSSY: dict[str, Callable[[Image.Image], bytes]] = {
    "JPEG gray q95": lambda g: encode(g, "JPEG", quality=95),
    "JPEG RGB q95": lambda g: encode(g.convert("RGB"), "JPEG", quality=95),
    "JPEG CMYK q95": lambda g: encode(g.convert("RGB").convert("CMYK"), "JPEG", quality=95),
    "JPEG EXIF-rotated (6) q95": lambda g: rotated_with_tag(g.convert("RGB"), 6, "JPEG", quality=95),
    "MPO (phone JPEG) q95": lambda g: encode(g.convert("RGB"), "MPO", quality=95, save_all=True,
                                             append_images=[Image.new("RGB", g.size, "white")]),
}
