"""Input preprocessing shared by training and serving: the only place it is defined.

Pure functions from raw inputs (encoded images, records) to the arrays the models take,
so that the training loader and the service endpoints cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageChops, ImageOps, ImageStat, UnidentifiedImageError

from service.colour import HIGH_DEPTH_FULL_SCALE, high_depth_levels, to_srgb
from service.errors import InvalidInput
from service.specs import KOBE, CategoricalFeature, ImageInput, ModelSpec, NumericFeature

if TYPE_CHECKING:  # pandas is imported where a frame is built: the arbiter never needs it
    import pandas as pd

Columns = Mapping[str, Sequence[Any]]
"""Tabular rows by column: a DataFrame (training) or {feature: values} (serving)."""

# Larger images are refused before their pixels are decoded (decompression bombs).
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_CALL_PIXELS = 2 * MAX_IMAGE_PIXELS
"""Pixels the images of one call may hold together (two 12-megapixel photos fit): the work
one call can ask of a decoder thread (service/decoding.py) is bounded before it starts."""
# Uploads whose mean border intensity is above this count as dark ink on a light page.
LIGHT_BACKGROUND_THRESHOLD = 127.5
ACCEPTED_IMAGE_FORMATS = ("PNG", "JPEG", "WebP", "BMP", "TIFF", "GIF")
"""The image formats the service reads (a single frame each). Only their decoders run:
fewer parsers exposed to uploads, and one clear list to name when a file is refused."""
ACCEPTED_FORMATS_TEXT = ", ".join(ACCEPTED_IMAGE_FORMATS[:-1]) + f" or {ACCEPTED_IMAGE_FORMATS[-1]}"
_PILLOW_FORMATS = [f.upper() for f in ACCEPTED_IMAGE_FORMATS]


MAX_ASPECT_RATIO = 16
"""Longest side over shortest side accepted. The models read square pictures (a cell, a
digit) squeezed to their input size; a strip 16 times longer than wide holds neither, and
a 1x16,777,216 strip cost 1.8 s of decoding for nothing."""


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode one picture fully, as a viewer shows it (EXIF orientation applied, colours
    converted to sRGB). Refuses non-images, other formats, several frames, truncated files,
    huge sizes and odd shapes."""
    return load_image(open_image(data, max_pixels))


def open_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Read the header only: the format, size and frame count are checked before any pixel
    is decoded, so the cost of decoding is known and bounded (at most `max_pixels` pixels,
    64 MB decoded in Pillow's widest modes) before it starts."""
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    with _pillow_errors(max_pixels):
        image = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
        _check_size(*image.size, max_pixels)
        # is_animated stops at the second frame (n_frames walks every page of a TIFF, in
        # time quadratic in their number). MPO: the multi-picture JPEG phones write (Pillow
        # opens it as JPEG); frame 0 is the photo.
        if getattr(image, "is_animated", False) and image.format != "MPO":
            raise InvalidInput(f"the {image.format} file has more than one frame (animated or multi-page); "
                               "send a single picture")
        return image


def load_image(image: Image.Image) -> Image.Image:
    """Decode the pixels of an opened image, turn it as its EXIF says, convert it to sRGB."""
    with _pillow_errors(MAX_IMAGE_PIXELS):
        image.load()
    _apply_orientation(image)
    return to_srgb(image)


def _apply_orientation(image: Image.Image) -> None:
    """EXIF orientation applied in place. EXIF that cannot be read is ignored, in every
    format alike, as browsers do: it is metadata about the picture, not the picture."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, TypeError, KeyError, IndexError):
        pass


@contextmanager
def _pillow_errors(max_pixels: int) -> Iterator[None]:
    """Pillow's exceptions on a client's file as InvalidInput, without Pillow's internals."""
    try:
        yield
    except InvalidInput:
        raise
    except UnidentifiedImageError:
        raise InvalidInput(f"not an image in an accepted format; send {ACCEPTED_FORMATS_TEXT}") from None
    except Image.DecompressionBombError:
        raise InvalidInput(f"the image is too large: at most {max_pixels} pixels are accepted") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, TypeError, KeyError, IndexError,
            MemoryError) as exc:
        # What Pillow's decoders raise on corrupt files (TypeError: a TIFF without dimensions).
        raise InvalidInput(f"corrupt or truncated image ({exc})") from None


def quiet_image_warnings() -> None:
    """Pillow's warnings about a client's file (broken metadata, a size over its own bomb
    threshold, which _check_size refuses anyway) are not server events: silenced for the
    process, once, when the service starts. Not with warnings.catch_warnings around each
    decode: it swaps the process-wide filter list, which is unsafe with decoder threads
    (service/decoding.py), and cost ~10 us a picture."""
    warnings.filterwarnings("ignore", module=r"PIL\.")
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidInput(f"the image is too large: it declares {width}x{height} pixels; at most "
                           f"{max_pixels} pixels are accepted")
    if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
        raise InvalidInput(f"the image is {width}x{height} pixels: one side may be at most {MAX_ASPECT_RATIO} "
                           "times the other")


def image_to_array(image: Image.Image, spec: ImageInput) -> np.ndarray:
    """Any size, mode or format -> float32 array (height, width, channels) in model scale."""
    image = _eight_bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = _flattened(image, spec)
    try:
        converted = image.convert(spec.color_mode)
    except ValueError:
        raise InvalidInput(f"unsupported colour mode {image.mode}") from None
    if converted.size != (spec.width, spec.height):
        # BOX averages areas, like the block counts scikit-learn's digits were made from.
        converted = converted.resize((spec.width, spec.height), Image.Resampling.BOX)
    pixels = np.asarray(converted, dtype=np.float32).reshape(spec.height, spec.width, spec.channels)
    if spec.invert_light_background and _border_mean(pixels) > LIGHT_BACKGROUND_THRESHOLD:
        pixels = 255.0 - pixels
    return pixels * np.float32(spec.scale)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey levels scaled (not clipped) to 8 bits: value * 255 / full.

    Pillow's own conversion clips them, which turns a 16-bit picture almost white.
    """
    if image.mode not in HIGH_DEPTH_FULL_SCALE:
        return image
    levels, full, opaque = high_depth_levels(image)
    values = levels.astype(np.float32)  # a copy, scaled in place: 64 MB for 4096x4096
    np.multiply(values, np.float32(255.0 / full), out=values)
    scaled = Image.fromarray(np.rint(values, out=values).astype(np.uint8), mode="L")
    if opaque is not None:
        scaled.putalpha(Image.fromarray(opaque.astype(np.uint8) * 255, mode="L"))
    return scaled


def _flattened(image: Image.Image, spec: ImageInput) -> Image.Image:
    """Transparency composited on the background the model was trained on (RGB, 8 bits).

    Pillow's own 8-bit operations: float arrays of a 4096x4096 picture would take a GB.
    """
    try:
        rgba = image.convert("RGBA")
    except ValueError:
        raise InvalidInput(f"unsupported colour mode {image.mode}") from None
    level = {"black": 0, "white": 255}.get(spec.transparent_becomes)
    if level is None:  # "contrast": a page that stands out from the strokes
        level = 255 if _ink_level(rgba) < LIGHT_BACKGROUND_THRESHOLD else 0
    page = Image.new("RGBA", rgba.size, (level, level, level, 255))
    return Image.alpha_composite(page, rgba).convert("RGB")


def _ink_level(rgba: Image.Image) -> float:
    """Mean grey level of the drawn (non-transparent) pixels, weighted by their opacity."""
    alpha = rgba.getchannel("A")
    opacity = ImageStat.Stat(alpha).sum[0]
    if not opacity:
        return 255.0  # nothing drawn: a black page
    return ImageStat.Stat(ImageChops.multiply(rgba.convert("L"), alpha)).sum[0] * 255.0 / opacity


def _border_mean(pixels: np.ndarray) -> float:
    border = np.concatenate(
        [pixels[0].ravel(), pixels[-1].ravel(), pixels[:, 0].ravel(), pixels[:, -1].ravel()]
    )
    return float(border.mean())


def encoded_image_to_array(data: bytes, spec: ImageInput) -> np.ndarray:
    return image_to_array(decode_image(data), spec)


def model_input_from_image(array: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The model's row for one preprocessed image: flat pixels for tabular-style models."""
    if spec.features:  # digits: a model over 64 named pixel features
        return array.reshape(-1)
    return array


def feature_dtype(feature: CategoricalFeature | NumericFeature) -> type:
    if isinstance(feature, CategoricalFeature):
        return object
    return np.int64 if feature.integer else np.float64


def typed_frame(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Fix column order and dtypes so training and serving hand the model the same frame."""
    import pandas as pd

    return pd.DataFrame({f.name: frame[f.name].astype(feature_dtype(f)) for f in spec.features}, index=frame.index)


def records_frame(records: list[dict], spec: ModelSpec) -> pd.DataFrame:
    """Validated records -> the frame typed_frame gives, built column by column (a third
    of the time of DataFrame.from_records + typed_frame: it runs once per served batch)."""
    import pandas as pd

    return pd.DataFrame({f.name: pd.Series([record[f.name] for record in records], dtype=feature_dtype(f))
                         for f in spec.features})


def kobe_shot_context(columns: Columns) -> dict[str, np.ndarray]:
    """Derived shot facts: home game, shot angle, seconds left in the period."""
    loc_x, loc_y = (np.asarray(columns[name], np.float64) for name in ("loc_x", "loc_y"))
    minutes, seconds = (np.asarray(columns[name], np.float64) for name in ("minutes_remaining", "seconds_remaining"))
    return {
        "home": np.fromiter((" vs. " in matchup for matchup in columns["matchup"]), np.float64, len(loc_x)),
        "angle": np.arctan2(loc_x, loc_y.clip(-10) + 10),
        "clock": minutes * 60 + seconds,
    }


KOBE_CATEGORY_CODES = {f.name: {value: float(code) for code, value in enumerate(f.categories)}
                       for f in KOBE.categorical_features if f.name != "matchup"}
"""matchup only tells home from away (kobe_shot_context); the other categories are inputs,
coded by their position in the spec's list."""


def kobe_model_matrix(columns: Columns) -> np.ndarray:
    """The kobe trees' input: category codes, then the numbers and the derived facts.

    Runs first in the saved kobe Pipeline (on a DataFrame, in training), so the model
    derives its inputs itself; serving calls it on a batch's columns of validated records
    and the trees on its result (MODEL_MATRICES): no pandas per request. An unknown
    category codes as -1, which the trees treat as missing. Dictionary look-ups: a
    ColumnTransformer with an OrdinalEncoder (or pandas Categoricals) cost 3-4 ms a call.
    """
    rows = len(columns[KOBE.features[0].name])
    matrix = [np.fromiter((codes.get(value, -1.0) for value in columns[name]), np.float64, rows)
              for name, codes in KOBE_CATEGORY_CODES.items()]
    matrix += [np.asarray(columns[f.name], np.float64) for f in KOBE.numeric_features]
    matrix += list(kobe_shot_context(columns).values())
    return np.column_stack(matrix)


MODEL_MATRICES: dict[str, Callable[[Columns], np.ndarray]] = {KOBE.name: kobe_model_matrix}
"""Models whose trained scikit-learn Pipeline starts with FunctionTransformer(this function):
serving builds the matrix from a batch's columns itself and runs the rest of the pipeline
(its arrays, service/arrays.py)."""


def records_columns(records: Sequence[Mapping[str, Any]], spec: ModelSpec) -> dict[str, list]:
    """Validated records -> {feature: values}, in the spec's feature order."""
    return {f.name: [record[f.name] for record in records] for f in spec.features}


_WHITESPACE = str.maketrans("", "", " \t\r\n")
_URL_SAFE = str.maketrans("-_", "+/")


def decode_base64(images: list[str]) -> list[bytes]:
    return [_base64(index, text) for index, text in enumerate(images)]


def _base64(index: int, text: str) -> bytes:
    """Standard base64, and its unambiguous variants: wrapped lines (GNU `base64` wraps at 76
    columns), the URL-safe alphabet (RFC 4648 section 5) and missing padding; a data: URL's
    payload. Anything else is refused saying what is wrong, and where."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)  # the usual form, without a copy of the text
    except (binascii.Error, ValueError):
        pass
    compact = text.translate(_WHITESPACE)
    if "-" in compact or "_" in compact:
        if "+" in compact or "/" in compact:
            raise InvalidInput(f"images[{index}]: not valid base64: it mixes the standard (+/) and "
                               "URL-safe (-_) alphabets")
        compact = compact.translate(_URL_SAFE)
    unpadded = compact.rstrip("=")
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"images[{index}]: not valid base64: {_base64_problem(text, unpadded)}") from None


def _base64_problem(text: str, unpadded: str) -> str:
    """Why text that failed to decode is not base64 (the slow path, for refusals only)."""
    stray = re.search(r"[^A-Za-z0-9+/=\-_ \t\r\n]", text)
    if stray is not None:
        return f"character {stray.group()!r} at position {stray.start()} is not in the base64 alphabet"
    if "=" in unpadded:
        return "'=' padding inside the text (it may only end it)"
    if len(unpadded) % 4 == 1:
        return f"{len(unpadded)} base64 characters cannot encode whole bytes (a character is missing or extra)"
    return "it does not decode"


def opened_images(encoded: Sequence[bytes]) -> list[Image.Image]:
    """Every image of a call opened (headers only) and checked, alone and together."""
    images, pixels = [], 0
    for index, data in enumerate(encoded):
        with _image_index(index):
            image = open_image(data)
            pixels += image.width * image.height
            if pixels > MAX_CALL_PIXELS:
                raise InvalidInput(f"the images of one call are too large together: at most {MAX_CALL_PIXELS} "
                                   "pixels in total; send fewer or smaller images per call")
            images.append(image)
    return images


def rows_of_images(spec: ModelSpec, images: list[Image.Image]) -> np.ndarray:
    """Decode and preprocess opened images one at a time (each freed once it is a row)."""
    assert spec.image is not None
    rows = []
    for index, image in enumerate(images):
        with _image_index(index):
            loaded = load_image(image)
            rows.append(model_input_from_image(image_to_array(loaded, spec.image), spec))
            loaded.close()
            image.close()
    return np.stack(rows)


def images_to_rows(spec: ModelSpec, encoded: Sequence[bytes]) -> np.ndarray:
    """Decode and preprocess every image of a call; errors name the image's position."""
    return rows_of_images(spec, opened_images(encoded))


@contextmanager
def _image_index(index: int) -> Iterator[None]:
    try:
        yield
    except InvalidInput as exc:
        raise InvalidInput(f"images[{index}]: {exc}") from None
