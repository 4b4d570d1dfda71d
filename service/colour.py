"""Colour-managed reading: an uploaded picture's declared colour space converted to sRGB.

The models were trained on untagged sRGB pictures, so a picture is given to them as a
colour-managed viewer shows it: the pixels converted from the colour space the file declares
into sRGB (grey pictures into grey with the sRGB curve, "sGrey"). `to_srgb` is the one entry.

Decisions, and why:

- What declares a colour space, in the order PNG 3 gives: an embedded ICC profile
  (`info["icc_profile"]`: PNG iCCP, JPEG APP2, WebP, TIFF), then PNG's sRGB chunk, then
  PNG's gAMA and cHRM. gAMA/cHRM become a small ICC v2 profile (`rgb_profile`,
  `grey_profile`), so every conversion takes the one path through LittleCMS. gAMA without
  cHRM means the sRGB primaries; cHRM without gAMA, the sRGB curve (each chunk replaces the
  sRGB default of its own half); a gAMA or cHRM with impossible values is ignored, as libpng
  ignores it.
- Fast path: no declaration, an sRGB chunk, or a gAMA within 1% of 1/2.2 (0.45..0.459)
  whose primaries are sRGB's (no cHRM, or cHRM within 0.002 of sRGB's) return the picture
  itself: two dictionary look-ups, no import of ImageCms. Writers put 45455 (or 45000)
  beside sRGB pixels to mean "an ordinary display", and libpng's simplified API reads a gAMA
  within 5% of 1/2.2 as sRGB (png_gamma_not_sRGB); a strict reading (a pure 2.2 power) would
  move darks by up to 9 levels from what the writer meant. 1% keeps real differences (1/2.0,
  1/1.8, 1/2.4) converted.
- An embedded profile whose conversion changes no 8-bit level by more than 1 on a probe of
  every grey, every primary ramp and a 16^3 grid counts as sRGB (the many sRGB profiles in
  circulation differ by rounding): the picture is returned as it is. The verdict, like every
  built conversion, is cached per profile (by digest of its bytes; the 32 latest), so a
  profile costs LittleCMS work once per process (5-10 ms; a CMYK table ~80 ms; importing
  ImageCms the first time) and a hash of its bytes afterwards (~3 us per picture).
- Intent: relative colorimetric with black-point compensation. Colorimetric because it
  reproduces in-gamut colours exactly, so a picture converted from sRGB into any space and
  back gives the training data's pixel values again (perceptual tables would re-render
  them); colours outside sRGB are clipped: the training data never held them. Black-point
  compensation maps a print (CMYK) profile's deepest black to sRGB black, as Photoshop does:
  the cells lie on black, and without it that background would come out dark grey. On
  matrix/curve profiles (black at 0) it changes nothing.
- A profile that is not a colour profile of these pixels is ignored and the picture read as
  sRGB, as browsers and libpng do: bytes that are no ICC profile (no 'acsp' signature,
  shorter than declared, refused by LittleCMS), or a profile of another colour space than
  the pixels' (an RGB profile on a grey picture). The client sees such a file as sRGB in
  every viewer, so the model sees what the client sees.
- A readable profile of the pixels' colour space that cannot be applied is refused with
  InvalidInput (400) naming the profile: LittleCMS cannot build the conversion (tags
  missing; a device-link, abstract or named-colour profile). Reading those pixels as sRGB
  would be a guess. LAB pixels (a Lab profile is what Pillow notes on them) are absolute
  colours, not a profile's to convert: they pass on as they are, and image_to_array refuses
  them by name, as it did.
- Modes: palette and YCbCr pictures become RGB (RGBA if transparent) first; alpha (LA, RGBA, PA, a tRNS
  colour key) is kept and only the colour converted; 1-bit becomes L; 16-bit, 32-bit and
  float grey are converted from 16 bits (I;16, value * 65535 / full scale, as
  service.preprocessing reads them) to 8-bit L. Grey pictures stay grey (L): a grey profile
  is converted to sGrey, which is what sRGB shows for a neutral grey, and image_to_array
  turns L into RGB by copying it, RGB into L with luma weights that return a neutral level.
- The result carries no colour declaration (to_srgb(to_srgb(x)) is to_srgb(x)); its other
  info (dpi, exif) is kept.

Not read: EXIF's ColorSpace / Interoperability "R03" (a camera's Adobe RGB without a profile:
most viewers ignore it too), PNG 3's cICP (Pillow does not parse it), and profiles inside BMP
and GIF files (Pillow does not read them).
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from PIL import Image

from service.errors import InvalidInput

if TYPE_CHECKING:
    from PIL import ImageCms

SRGB_CHROMATICITIES: Final = (0.3127, 0.3290, 0.64, 0.33, 0.30, 0.60, 0.15, 0.06)
"""White x, y, then red, green and blue x, y: Pillow's order for a PNG cHRM chunk."""
SRGB_GAMMA_TOLERANCE: Final = 0.01
"""A PNG gAMA whose 2.2 * gamma lies within 1 +- this is sRGB's curve (see the module doc)."""
SRGB_CHROMATICITY_TOLERANCE: Final = 0.002
SAME_LEVEL_TOLERANCE: Final = 1
"""An embedded profile whose conversion moves no probed 8-bit level further is sRGB."""
_D50: Final = (0.9642, 1.0, 0.8249)  # the ICC profile connection space's white
_BRADFORD: Final = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
_COLOUR_INFO: Final = ("icc_profile", "srgb", "gamma", "chromaticity", "transparency")
_GREY_MODES: Final = frozenset({"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_RGB_MODES: Final = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "YCbCr"})
HIGH_DEPTH_FULL_SCALE: Final = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0,
                                 "I": 65535.0, "F": 1.0}
"""Modes whose samples exceed 8 bits, with the value that means full intensity in each
(service.preprocessing reads them with the same scale)."""
_SAME: Final = object()  # a plan: return the picture as it is
_PLANS: dict[tuple[bytes, str], Any] = {}
"""(profile digest, colour mode) -> an ImageCms transform, a grey table (list: 8-bit, array: 16-bit),
_SAME, or a refusal (str)."""
_PLANS_LOCK = threading.Lock()
_MAX_PLANS: Final = 32


def to_srgb(image: Image.Image) -> Image.Image:
    """The picture as a colour-managed viewer shows it, in sRGB (grey: sGrey) values.

    Returns `image` itself when it declares sRGB, nothing, or a profile that is ignored; else
    a new image (L, LA, RGB or RGBA) that declares nothing. Raises InvalidInput for a profile
    it holds but cannot apply (see the module doc).
    """
    info = image.info
    profile = info.get("icc_profile")
    if not profile:
        if "srgb" in info or ("gamma" not in info and "chromaticity" not in info):
            return image
        gamma, chromaticities = info.get("gamma"), info.get("chromaticity")
        profile = _png_profile(gamma if isinstance(gamma, float) else None,
                               chromaticities if _valid_chromaticities(chromaticities) else None,
                               image.mode in _GREY_MODES)
        if profile is None:
            return image
    return _convert(image, profile)


# --- conversion -----------------------------------------------------------------------


def _convert(image: Image.Image, profile: bytes) -> Image.Image:
    if not _is_icc(profile):
        return image  # not a colour profile: ignored, like every viewer
    space, mode = profile[16:20], image.mode
    family = b"GRAY" if mode in _GREY_MODES else b"RGB " if mode in _RGB_MODES else mode.encode()
    if family != space:
        return image  # a profile of another colour space: ignored, as libpng and browsers do
    high_depth = mode in HIGH_DEPTH_FULL_SCALE
    plan = _plan(profile, "I;16" if high_depth else {b"GRAY": "L", b"RGB ": "RGB"}.get(family, mode))
    if plan is _SAME:
        return image
    if isinstance(plan, str):
        raise InvalidInput(plan)
    colour, alpha = _sixteen_bit(image) if high_depth else _split(image)
    try:
        if isinstance(plan, list):  # 8-bit grey
            converted = colour.point(plan)
        elif isinstance(plan, np.ndarray):  # 16-bit grey
            converted = Image.fromarray(plan[np.asarray(colour)])
        else:
            converted = plan.apply(colour)
    except (ValueError, OSError) as exc:  # what Pillow's LittleCMS binding raises
        raise InvalidInput(f"the image's embedded colour profile could not be applied ({exc})") from None
    if alpha is not None:
        converted.putalpha(alpha)
    converted.info = {key: value for key, value in image.info.items() if key not in _COLOUR_INFO}
    return converted


def _is_icc(profile: Any) -> bool:
    """Bytes that can be an ICC profile: a header with the 'acsp' signature, none missing."""
    return (isinstance(profile, bytes) and len(profile) >= 132 and profile[36:40] == b"acsp"
            and int.from_bytes(profile[:4], "big") <= len(profile))


def _split(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The 8-bit colour to convert (L, RGB or CMYK) and the alpha channel to keep, if any."""
    mode = image.mode
    if mode in ("L", "RGB", "CMYK") and "transparency" not in image.info:
        return image, None
    try:
        if mode == "P" or mode == "PA":
            image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
        elif mode == "1":
            image = image.convert("L")
        elif mode in ("L", "RGB", "La", "RGBa"):  # a tRNS colour key, or premultiplied alpha
            image = image.convert("LA" if mode[0] == "L" else "RGBA")
        elif mode in ("RGBX", "YCbCr"):  # YCbCr (a TIFF's): the profile describes its RGB
            image = image.convert("RGB")
    except ValueError:
        raise InvalidInput(f"the image's embedded colour profile cannot be applied to its {mode} pixels") from None
    if image.mode in ("LA", "RGBA"):
        return image.convert(image.mode[:-1]), image.getchannel("A")
    return image, None


def _sixteen_bit(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """High-depth grey as I;16 (value * 65535 / full scale) and the alpha of a tRNS key."""
    values, full, opaque = high_depth_levels(image)
    alpha = Image.fromarray(opaque.astype(np.uint8) * 255) if opaque is not None else None
    scaled = values if full == 65535.0 else np.rint(values.astype(np.float64) * (65535.0 / full))
    return Image.fromarray(scaled.astype("<u2")), alpha


def high_depth_levels(image: Image.Image) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(levels, full scale, opaque mask) of a high-depth grey picture; the mask (None without
    one) is False where a PNG's colour key makes a level transparent. Levels outside
    0..full are refused, never clipped."""
    values = np.asarray(image)
    full = HIGH_DEPTH_FULL_SCALE[image.mode]
    low, high = float(values.min()), float(values.max())
    if not (0 <= low and high <= full):  # NaN fails too
        raise InvalidInput(f"{image.mode} image values must lie in 0..{full:g}; found {low:g}..{high:g}")
    key = image.info.get("transparency")
    return values, full, (values != key if isinstance(key, int) else None)


def _plan(profile: bytes, mode: str) -> Any:
    """What converting `mode` pixels from `profile` takes, built once per profile and mode."""
    key = (hashlib.blake2b(profile, digest_size=16).digest(), mode)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _build(profile, mode)
        with _PLANS_LOCK:
            if len(_PLANS) >= _MAX_PLANS:
                del _PLANS[next(iter(_PLANS))]  # the oldest
            _PLANS[key] = plan
    return plan


def _build(profile: bytes, mode: str) -> Any:
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return _SAME  # LittleCMS cannot read it: ignored, like every viewer
    grey = mode in ("L", "I;16")
    flags = ImageCms.Flags.BLACKPOINTCOMPENSATION
    if grey:  # LittleCMS's optimised 8-bit grey curves are off by up to 9 levels in darks; tables are exact
        flags |= ImageCms.Flags.NOOPTIMIZE
    target, target_mode = (_sgrey(), "L") if grey else (_srgb(), "RGB")
    try:
        transform = ImageCms.buildTransform(source, target, mode, target_mode,
                                            ImageCms.Intent.RELATIVE_COLORIMETRIC, flags)
    except ImageCms.PyCMSError as exc:
        return (f"the image's embedded colour profile {_name(source)} cannot be converted to sRGB ({exc}); "
                "save the image in sRGB or without a profile")
    if mode == "I;16":  # a table of every 16-bit level; sRGB-like when the 8-bit reading is
        if _plan(profile, "L") is _SAME:
            return _SAME
        return np.asarray(transform.apply(Image.fromarray(np.arange(65536, dtype="<u2")[None, :]))).ravel()
    if mode in ("L", "RGB"):
        probe = _probe(grey)
        converted = np.asarray(transform.apply(probe))
        if np.abs(converted.astype(np.int16) - np.asarray(probe, np.int16)).max() <= SAME_LEVEL_TOLERANCE:
            return _SAME
        if grey:  # 8-bit grey to grey is a function of the level: a table (3x faster than LittleCMS)
            return converted.ravel().tolist()
    return transform


@lru_cache(maxsize=2)
def _probe(grey: bool) -> Image.Image:
    """Every 8-bit grey; for RGB also every level of each primary and a 16^3 grid."""
    ramp = np.arange(256, dtype=np.uint8)
    if grey:
        return Image.fromarray(ramp[None, :])
    zero = np.zeros(256, np.uint8)
    grid = np.stack(np.meshgrid(*[np.arange(0, 256, 17, dtype=np.uint8)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pixels = np.concatenate([np.stack(columns, -1) for columns in
                             [(ramp, ramp, ramp), (ramp, zero, zero), (zero, ramp, zero), (zero, zero, ramp)]] + [grid])
    return Image.fromarray(pixels[None, :, :])


@lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=1)
def _sgrey() -> ImageCms.ImageCmsProfile:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(io.BytesIO(grey_profile(None, "sGrey (grey with the sRGB curve)")))


def _name(profile: ImageCms.ImageCmsProfile) -> str:
    """The profile's description, quoted and cut short (a client wrote it)."""
    from PIL import ImageCms

    try:
        text = " ".join(ImageCms.getProfileDescription(profile).split())
    except ImageCms.PyCMSError:
        text = ""
    text = "".join(c for c in text if c.isprintable())[:60]
    return f"'{text}'" if text else "(no description)"


# --- PNG gAMA and cHRM ------------------------------------------------------------------


@lru_cache(maxsize=64)
def _png_profile(gamma: float | None, chromaticities: tuple[float, ...] | None, grey: bool) -> bytes | None:
    """The profile a PNG's gAMA and cHRM declare; None when that is sRGB (or both are invalid)."""
    exponent = 1.0 / gamma if gamma is not None and 0.1 <= gamma <= 10.0 else None  # else an invalid gAMA
    srgb_primaries = chromaticities is None or all(
        abs(a - b) <= SRGB_CHROMATICITY_TOLERANCE for a, b in zip(chromaticities, SRGB_CHROMATICITIES, strict=True))
    if exponent is not None and abs(2.2 / exponent - 1) <= SRGB_GAMMA_TOLERANCE + 1e-9 and (srgb_primaries or grey):
        exponent = None  # ~1/2.2 on sRGB primaries: sRGB (see the module doc)
    if exponent is None and (srgb_primaries or grey):
        return None
    if grey:
        return grey_profile(exponent, "PNG gAMA")
    return rgb_profile(exponent, chromaticities or SRGB_CHROMATICITIES, "PNG gAMA and cHRM")


def _valid_chromaticities(values: Any) -> bool:
    """Eight numbers of a cHRM chunk that describe a colour space (independent primaries)."""
    if not (isinstance(values, tuple) and len(values) == 8 and all(isinstance(v, float) for v in values)):
        return False
    if not all(0.0 < v < 1.0 for v in values[1::2]) or not all(0.0 <= v < 1.0 for v in values[::2]):
        return False
    return bool(abs(np.linalg.det(_primaries(values))) > 1e-6)


# --- a minimal ICC v2 writer --------------------------------------------------------------


def rgb_profile(gamma: float | None, chromaticities: Sequence[float] = SRGB_CHROMATICITIES,
                description: str = "RGB") -> bytes:
    """An ICC v2 matrix/curve RGB display profile, as a PNG's gAMA and cHRM define one.

    `gamma` is the exponent that turns stored values into linear light (2.2 for a PNG gAMA
    of 0.45455, 563/256 for Adobe RGB), None for the sRGB curve. `chromaticities`: white x, y,
    then red, green, blue x, y. The colorants are Bradford-adapted to D50, as ICC requires.
    """
    if len(chromaticities) != 8:
        raise ValueError("chromaticities: white, red, green and blue x, y (8 numbers)")
    primaries = _primaries(chromaticities)
    white = _xyz(chromaticities[0], chromaticities[1])
    colorants = _adaptation_to_d50(white) @ (primaries * np.linalg.solve(primaries, white))
    curve = _curve(gamma)
    return _icc(b"RGB ", [(b"desc", _desc(description)), (b"cprt", _text("No copyright, use freely")),
                          (b"wtpt", _xyz_tag(white)), (b"rXYZ", _xyz_tag(colorants[:, 0])),
                          (b"gXYZ", _xyz_tag(colorants[:, 1])), (b"bXYZ", _xyz_tag(colorants[:, 2])),
                          (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)])


def grey_profile(gamma: float | None, description: str = "Grey") -> bytes:
    """An ICC v2 grey display profile: `gamma` as for rgb_profile (1.0: linear grey)."""
    return _icc(b"GRAY", [(b"desc", _desc(description)), (b"cprt", _text("No copyright, use freely")),
                          (b"wtpt", _xyz_tag(_D50)), (b"kTRC", _curve(gamma))])


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def _primaries(chromaticities: Sequence[float]) -> np.ndarray:
    """The primaries' XYZ (Y = 1) as columns."""
    return np.column_stack([_xyz(chromaticities[i], chromaticities[i + 1]) for i in (2, 4, 6)])


def _adaptation_to_d50(white: np.ndarray) -> np.ndarray:
    """Bradford: the matrix that moves colours seen under `white` to the D50 of the PCS."""
    cone_ratio = (_BRADFORD @ np.array(_D50)) / (_BRADFORD @ white)
    adaptation: np.ndarray = np.linalg.inv(_BRADFORD) @ np.diag(cone_ratio) @ _BRADFORD
    return adaptation


def _curve(gamma: float | None) -> bytes:
    """A 'curv' tag: one u8Fixed8 exponent, or the sRGB curve sampled 1024 times."""
    if gamma is not None:
        if not 0 < gamma < 256:
            raise ValueError(f"gamma {gamma} is outside the ICC curve's 0..256")
        return b"curv" + bytes(4) + struct.pack(">IH", 1, max(1, round(gamma * 256)))
    levels = [i / 1023 for i in range(1024)]
    linear = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in levels]
    return b"curv" + bytes(4) + struct.pack(f">I{len(linear)}H", len(linear), *(round(v * 65535) for v in linear))


def _s15(value: float) -> int:
    return math.floor(value * 65536 + 0.5)


def _xyz_tag(xyz: Sequence[float] | np.ndarray) -> bytes:
    return b"XYZ " + bytes(4) + struct.pack(">3i", *(_s15(float(v)) for v in xyz))


def _text(text: str) -> bytes:
    return b"text" + bytes(4) + text.encode("ascii") + b"\0"


def _desc(text: str) -> bytes:
    """A v2 textDescriptionType: ASCII, then empty Unicode and ScriptCode parts."""
    ascii_text = text.encode("ascii", "replace") + b"\0"
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(8) + bytes(3) + bytes(67)


def _icc(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """Header, tag table and tag data (4-byte aligned; identical data stored once)."""
    offset = 128 + 4 + 12 * len(tags)
    table: list[bytes] = []
    data, placed = b"", dict[bytes, int]()
    for signature, body in tags:
        if body not in placed:
            placed[body] = offset + len(data)
            data += body + bytes(-len(body) % 4)
        table.append(struct.pack(">4sII", signature, placed[body], len(body)))
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s6H4s4sI4sIQI3i4s16s28s", size, b"", 0x02100000, b"mntr", space, b"XYZ ",
                         2000, 1, 1, 0, 0, 0, b"acsp", b"", 0, b"", 0, 0, 0, *(_s15(v) for v in _D50),
                         b"", b"", b"")
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data
