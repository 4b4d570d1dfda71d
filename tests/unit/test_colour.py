"""Colour-managed reading (service/colour.py): a picture stored in another colour space, with
that space declared in the file, reads as the sRGB picture it was made from.

Metamorphic: real cells and scikit-learn digits are converted by LittleCMS from sRGB into
linear grey, Adobe RGB (1998), ProPhoto RGB and Display P3 and saved with the space declared
(an embedded ICC profile in PNG, JPEG, WebP or TIFF, or PNG gAMA/cHRM chunks); `to_srgb` must
give back the original pixels within the tolerances below, measured for 8-bit storage in each
space. Pillow's reading without colour management (what the service did before) is far off,
so every round trip also shows the declaration is needed. The dataset's cells are grey; the
RGB spaces get them tinted as stained smears look, so that colours, not only greys, are tested.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from service.colour import SRGB_CHROMATICITIES, grey_profile, rgb_profile, to_srgb
from service.errors import InvalidInput
from service.preprocessing import decode_image, image_to_array
from service.specs import DIGITS, MALARIA, ImageInput
from tests.images import encode, render_digit

ADOBE_RGB = (0.3127, 0.3290, 0.64, 0.33, 0.21, 0.71, 0.15, 0.06)
PROPHOTO_RGB = (0.3457, 0.3585, 0.7347, 0.2653, 0.1596, 0.8404, 0.0366, 0.0001)  # white D50
DISPLAY_P3 = (0.3127, 0.3290, 0.680, 0.320, 0.265, 0.690, 0.150, 0.060)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class Space:
    profile: bytes
    mode: str  # what the pictures are stored as: L or RGB
    mean: float  # largest mean |difference| from the original, 8-bit levels, stored as PNG
    max: int  # largest single difference, PNG
    why: str


SPACES = {
    "linear grey": Space(
        grey_profile(1.0, "Gray Gamma 1.0"), "L", 0.75, 10,
        "8-bit linear light has codes 0 and 1 for sRGB levels 0-12 (code 1 is level 13): darks come "
        "back up to 6 levels off (measured: mean 0.06 cells, 0.29 digits; max 6)"),
    "Adobe RGB (1998)": Space(
        rgb_profile(563 / 256, ADOBE_RGB, "Adobe RGB (1998)"), "RGB", 0.5, 2,
        "measured: mean 0.09, max 1"),
    "ProPhoto RGB": Space(
        rgb_profile(1.8, PROPHOTO_RGB, "ProPhoto RGB"), "RGB", 0.5, 3,
        "the widest gamut, fewest codes per colour: measured mean 0.19, max 2"),
    "Display P3": Space(  # Apple's definition: P3 primaries, D65 white, the sRGB curve
        rgb_profile(None, DISPLAY_P3, "Display P3"), "RGB", 0.5, 2, "measured: mean 0.02, max 1"),
}
JPEG_EXTRA_MEAN = 0.5
"""JPEG q95 in another space vs JPEG q95 in sRGB: mean difference from the original may grow by
at most this many levels (measured on the tinted cells and digits: -0.28 Adobe RGB, +0.04 ProPhoto,
+0.06 Display P3, against 2.04 for sRGB), the largest by JPEG_EXTRA_MAX."""
JPEG_EXTRA_MAX = 12  # measured: -4 Display P3, 0 Adobe RGB, +5 ProPhoto (its coarser codes), against 39
FORMULA_TOLERANCE = 1
"""to_srgb vs the colorimetric formula in floating point, applied to the stored 8-bit values."""


# --- pictures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells() -> list[Image.Image]:
    """20 real cells of each class (8-bit grey); skipped without the real data."""
    from training.settings import Settings

    root = Settings.from_env().data_dir / "malaria" / "cell_images"
    paths = [p for c in ("Parasitized", "Uninfected") for p in sorted((root / c).glob("*.png"))[:20]]
    if len(paths) < 40:
        pytest.skip(f"no malaria cells under {root}: point DATA_DIR at the real data")
    return [Image.open(p).convert("L") for p in paths]


@pytest.fixture(scope="module")
def tinted(cells) -> list[Image.Image]:
    """The cells coloured as Giemsa-stained smears look: purple-pink on black."""
    return [ImageOps.colorize(c, black=(0, 0, 0), white=(250, 215, 235), mid=(150, 70, 140)) for c in cells]


@pytest.fixture(scope="module")
def digits() -> list[Image.Image]:
    from sklearn.datasets import load_digits

    return [render_digit(pixels) for pixels in load_digits().data[:20]]


@pytest.fixture(scope="module")
def chart() -> Image.Image:
    """18^3 sRGB colours, saturated ones included."""
    levels = np.arange(0, 256, 15)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(72, 81, 3)
    return Image.fromarray(cube.astype(np.uint8))


def pictures_for(space: Space, cells, tinted, digits) -> list[Image.Image]:
    if space.mode == "L":
        return cells + digits
    return tinted + [d.convert("RGB") for d in digits]


def into(picture: Image.Image, profile: bytes, mode: str) -> Image.Image:
    """The sRGB picture converted into the space of `profile` (relative colorimetric)."""
    target = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    stored = ImageCms.profileToProfile(picture.convert("RGB"), SRGB, target,
                                       renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode=mode)
    assert stored is not None
    stored.info.clear()  # ImageCms notes the profile there, and Pillow would embed it in every file
    return stored


def pillow_decode(data: bytes) -> Image.Image:
    """What Pillow reads, without colour management (what the service read before)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def levels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def differences(pairs: list[tuple[Image.Image, Image.Image]]) -> np.ndarray:
    return np.concatenate([np.abs(levels(a) - levels(b)).ravel() for a, b in pairs])


def png_chunks(**chunks: bytes) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for name, data in chunks.items():
        info.add(name.encode("ascii"), data)
    return info


def gama(gamma: float) -> bytes:
    return struct.pack(">I", round(gamma * 100000))


def chrm(chromaticities: tuple[float, ...]) -> bytes:
    return struct.pack(">8I", *(round(v * 100000) for v in chromaticities))


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPACES))
def test_a_picture_stored_in_another_space_reads_as_the_original(cells, tinted, digits, name):
    space = SPACES[name]
    pairs, ignored = [], []
    for picture in pictures_for(space, cells, tinted, digits):
        data = encode(into(picture, space.profile, space.mode), "PNG", icc_profile=space.profile)
        read = to_srgb(pillow_decode(data))
        assert read.mode == space.mode and "icc_profile" not in read.info
        pairs.append((read, picture))
        ignored.append((pillow_decode(data).convert(space.mode), picture))
    found = differences(pairs)
    assert found.mean() <= space.mean and found.max() <= space.max, (found.mean(), found.max(), space.why)
    assert differences(ignored).mean() > 3 * space.mean  # unmanaged, the same files are far off


@pytest.mark.parametrize("name", ["Adobe RGB (1998)", "ProPhoto RGB", "Display P3"])
def test_jpeg_with_an_app2_profile_reads_like_an_srgb_jpeg(tinted, digits, name):
    """JPEG q95 coded in another space: as close to the original as the same JPEG coded in sRGB."""
    space = SPACES[name]
    managed, plain = [], []
    for picture in tinted + [d.convert("RGB") for d in digits]:
        data = encode(into(picture, space.profile, "RGB"), "JPEG", quality=95, icc_profile=space.profile)
        managed.append((to_srgb(pillow_decode(data)), picture))
        plain.append((pillow_decode(encode(picture, "JPEG", quality=95)), picture))
    found, baseline = differences(managed), differences(plain)
    assert found.mean() <= baseline.mean() + JPEG_EXTRA_MEAN, (found.mean(), baseline.mean())
    assert found.max() <= baseline.max() + JPEG_EXTRA_MAX, (found.max(), baseline.max())


@pytest.mark.parametrize("fmt,options", [("WEBP", {"lossless": True}), ("TIFF", {}), ("PNG", {"optimize": True})])
def test_webp_and_tiff_profiles_read_like_the_png_one(tinted, fmt, options):
    space = SPACES["Adobe RGB (1998)"]
    for picture in tinted[:5]:
        stored = into(picture, space.profile, "RGB")
        as_png = to_srgb(pillow_decode(encode(stored, "PNG", icc_profile=space.profile)))
        other = to_srgb(pillow_decode(encode(stored, fmt, icc_profile=space.profile, **options)))
        assert np.array_equal(levels(other), levels(as_png))


def bradford_to_d50(white_xy: tuple[float, float]) -> np.ndarray:
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    white = np.array([white_xy[0] / white_xy[1], 1.0, (1 - sum(white_xy)) / white_xy[1]])
    d50 = np.array([0.9642, 1.0, 0.8249])
    return np.linalg.inv(bradford) @ np.diag((bradford @ d50) / (bradford @ white)) @ bradford


def rgb_to_xyz_d50(chromaticities: tuple[float, ...]) -> np.ndarray:
    """The textbook RGB-to-XYZ matrix of a space (white Y = 1), adapted to D50."""
    xy = np.array(chromaticities).reshape(4, 2)
    xyz = np.column_stack([xy[:, 0] / xy[:, 1], np.ones(4), (1 - xy[:, 0] - xy[:, 1]) / xy[:, 1]]).T
    primaries, white = xyz[:, 1:], xyz[:, 0]
    return bradford_to_d50(tuple(xy[0])) @ primaries @ np.diag(np.linalg.solve(primaries, white))


def srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


@pytest.mark.parametrize("name,chromaticities,decode", [
    ("Adobe RGB (1998)", ADOBE_RGB, lambda v: v ** (563 / 256)),
    ("ProPhoto RGB", PROPHOTO_RGB, lambda v: v ** (461 / 256)),  # 1.8 as an ICC u8Fixed8 stores it
    ("Display P3", DISPLAY_P3, srgb_decode),
])
def test_the_conversion_is_the_colorimetric_formula(chart, name, chromaticities, decode):
    """Independent of 8-bit storage: the stored values converted in floating point."""
    space = SPACES[name]
    stored = pillow_decode(encode(into(chart, space.profile, "RGB"), "PNG", icc_profile=space.profile))
    linear = decode(np.asarray(stored, np.float64) / 255)
    to_srgb_matrix = np.linalg.inv(rgb_to_xyz_d50(SRGB_CHROMATICITIES)) @ rgb_to_xyz_d50(chromaticities)
    expected = np.rint(255 * srgb_encode(linear @ to_srgb_matrix.T))
    assert np.abs(levels(to_srgb(stored)) - expected).max() <= FORMULA_TOLERANCE
    # What 8-bit storage in the space costs on saturated colours (measured: mean 0.21 Display P3,
    # 0.23 Adobe RGB, 0.52 ProPhoto; max 8, 9, 16):
    assert np.abs(levels(to_srgb(stored)) - levels(chart)).mean() <= 0.75


def test_a_linear_grey_picture_is_the_sgrey_formula(cells):
    space = SPACES["linear grey"]
    stored = pillow_decode(encode(into(cells[0], space.profile, "L"), "PNG", icc_profile=space.profile))
    expected = np.rint(255 * srgb_encode(np.asarray(stored, np.float64) / 255))
    assert np.abs(levels(to_srgb(stored)) - expected).max() <= FORMULA_TOLERANCE


@pytest.mark.parametrize("name", list(SPACES))
def test_model_inputs_match_through_the_full_preprocessing(cells, tinted, digits, name):
    """decode_image, to_srgb, image_to_array: the model is given what it is given for the original."""
    space = SPACES[name]
    for pictures, spec in ((cells if space.mode == "L" else tinted, MALARIA.image), (digits, DIGITS.image)):
        for picture in pictures[:10]:
            data = encode(into(picture, space.profile, space.mode), "PNG", icc_profile=space.profile)
            found = image_to_array(to_srgb(decode_image(data)), spec)
            expected = image_to_array(picture, spec)
            assert np.abs(found - expected).max() <= space.max * spec.scale + 1e-6


# --- PNG gAMA and cHRM ------------------------------------------------------------------------


@pytest.mark.parametrize("case,gamma,chromaticities,equivalent", [
    ("gAMA 1.0: linear grey", 1.0, None, "linear grey"),
    ("gAMA 1/2.2 + cHRM: Adobe RGB", 0.45455, ADOBE_RGB, "Adobe RGB (1998)"),
    ("gAMA 1/1.8 + cHRM: ProPhoto RGB", 1 / 1.8, PROPHOTO_RGB, "ProPhoto RGB"),
    ("cHRM alone (sRGB curve): Display P3", None, DISPLAY_P3, "Display P3"),
])
def test_png_gama_and_chrm_are_honoured_like_the_profile_they_describe(cells, tinted, digits, case, gamma,
                                                                       chromaticities, equivalent):
    space = SPACES[equivalent]
    chunks = {}
    if gamma is not None:
        chunks["gAMA"] = gama(gamma)
    if chromaticities is not None:
        chunks["cHRM"] = chrm(chromaticities)
    pairs = []
    for picture in pictures_for(space, cells, tinted, digits)[::4]:
        stored = into(picture, space.profile, space.mode)
        tagged = pillow_decode(encode(stored, "PNG", pnginfo=png_chunks(**chunks)))
        assert "icc_profile" not in tagged.info and ("gamma" in tagged.info) == (gamma is not None)
        read = to_srgb(tagged)
        via_profile = to_srgb(pillow_decode(encode(stored, "PNG", icc_profile=space.profile)))
        assert np.array_equal(levels(read), levels(via_profile))  # one conversion path
        pairs.append((read, picture))
    found = differences(pairs)
    assert found.mean() <= space.mean and found.max() <= space.max


def test_linear_rgb_by_gama_alone_has_the_srgb_primaries(tinted):
    linear = rgb_profile(1.0, SRGB_CHROMATICITIES)
    for picture in tinted[:5]:
        stored = into(picture, linear, "RGB")
        read = to_srgb(pillow_decode(encode(stored, "PNG", pnginfo=png_chunks(gAMA=gama(1.0)))))
        assert np.array_equal(levels(read), levels(to_srgb(pillow_decode(encode(stored, "PNG", icc_profile=linear)))))
        assert differences([(read, picture)]).mean() <= 1.0


# --- what is read as it is ---------------------------------------------------------------------


def srgb_declarations(picture: Image.Image) -> dict[str, bytes]:
    grey = picture.convert("L")
    return {
        "untagged PNG": encode(picture, "PNG"),
        "sRGB chunk": encode(picture, "PNG", pnginfo=png_chunks(sRGB=b"\0")),
        "sRGB chunk beside a gAMA that says linear": encode(picture, "PNG", pnginfo=png_chunks(sRGB=b"\0",
                                                                                              gAMA=gama(1.0))),
        "gAMA 45455 (1/2.2)": encode(picture, "PNG", pnginfo=png_chunks(gAMA=gama(0.45455))),
        "gAMA 45000": encode(picture, "PNG", pnginfo=png_chunks(gAMA=gama(0.45))),
        "gAMA 45455 + the sRGB cHRM": encode(picture, "PNG", pnginfo=png_chunks(gAMA=gama(0.45455),
                                                                                cHRM=chrm(SRGB_CHROMATICITIES))),
        "grey, gAMA 45455 + a cHRM": encode(grey, "PNG", pnginfo=png_chunks(gAMA=gama(0.45455),
                                                                            cHRM=chrm(ADOBE_RGB))),
        "LittleCMS's sRGB profile": encode(picture, "PNG", icc_profile=SRGB.tobytes()),
        "an sRGB profile of ours": encode(picture, "PNG", icc_profile=rgb_profile(None, SRGB_CHROMATICITIES)),
        "grey with an sGrey profile": encode(grey, "PNG", icc_profile=grey_profile(None)),
        "JPEG with LittleCMS's sRGB profile": encode(picture, "JPEG", quality=95, icc_profile=SRGB.tobytes()),
        "untagged JPEG": encode(picture, "JPEG", quality=95),
        "untagged CMYK JPEG": encode(picture.convert("CMYK"), "JPEG", quality=95),
        "untagged 16-bit grey": encode(Image.fromarray(np.asarray(grey, np.uint16) * 257)),
        "invalid gAMA (0)": encode(picture, "PNG", pnginfo=png_chunks(gAMA=gama(0))),
        "invalid cHRM (a y of 0)": encode(picture, "PNG", pnginfo=png_chunks(cHRM=chrm((0.3127, 0.329, 0.64, 0,
                                                                                         0.3, 0.6, 0.15, 0.06)))),
    }


def test_srgb_and_untagged_pictures_are_returned_as_they_are(tinted):
    for case, data in srgb_declarations(tinted[0]).items():
        image = pillow_decode(data)
        assert to_srgb(image) is image, (case, image.info)


def test_a_gama_off_1_over_2_2_by_more_than_1_percent_is_converted(tinted):
    for gamma in (1 / 2.4, 0.5):
        image = pillow_decode(encode(tinted[0], "PNG", pnginfo=png_chunks(gAMA=gama(gamma))))
        assert to_srgb(image) is not image


def test_an_embedded_profile_wins_over_an_srgb_chunk(tinted):
    """PNG 3's order (iCCP before sRGB), should a file hold both."""
    space = SPACES["Adobe RGB (1998)"]
    image = pillow_decode(encode(into(tinted[0], space.profile, "RGB"), "PNG", icc_profile=space.profile))
    image.info["srgb"] = 0
    assert differences([(to_srgb(image), tinted[0])]).max() <= space.max


def test_the_fast_path_returns_the_picture_itself_and_loads_no_colour_engine():
    """Its cost (0.15-0.32 us a call, measured) is in docs/benchmarks.md, not asserted here."""
    program = """
import io, sys
from PIL import Image
from service.colour import to_srgb
buffer = io.BytesIO(); Image.new("L", (64, 64), 128).save(buffer, "PNG")
image = Image.open(io.BytesIO(buffer.getvalue())); image.load()
print(to_srgb(image) is image, "PIL.ImageCms" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]


# --- modes ---------------------------------------------------------------------------------------


def test_alpha_is_kept_and_only_the_colour_converted(cells, tinted):
    alpha = Image.linear_gradient("L").resize(tinted[0].size)
    for picture, name in ((tinted[0], "Adobe RGB (1998)"), (cells[0], "linear grey")):
        space = SPACES[name]
        stored = into(picture, space.profile, space.mode)
        with_alpha = stored.copy()
        with_alpha.putalpha(alpha)
        read = to_srgb(pillow_decode(encode(with_alpha, "PNG", icc_profile=space.profile)))
        opaque = to_srgb(pillow_decode(encode(stored, "PNG", icc_profile=space.profile)))
        assert read.mode == space.mode + "A"
        assert np.array_equal(levels(read.getchannel("A")), levels(alpha))
        assert np.array_equal(levels(read.convert(space.mode)), levels(opaque))


def test_palette_pictures_are_converted_as_their_rgb(digits):
    space = SPACES["Adobe RGB (1998)"]
    picture = digits[0].convert("RGB")  # 17 levels: a palette holds them exactly
    palette = into(picture, space.profile, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    read = to_srgb(pillow_decode(encode(palette, "PNG", icc_profile=space.profile)))
    assert read.mode == "RGB" and differences([(read, picture)]).max() <= space.max
    transparent = pillow_decode(encode(palette, "PNG", icc_profile=space.profile, transparency=0))
    read = to_srgb(transparent)
    assert read.mode == "RGBA" and "transparency" not in read.info
    assert np.array_equal(levels(read.getchannel("A")) == 0, np.asarray(transparent) == 0)


def test_sixteen_bit_linear_grey_keeps_its_precision(cells):
    """16-bit linear light has codes enough for every sRGB level: within 1, darks included."""
    profile = SPACES["linear grey"].profile
    for picture in cells[:10]:
        linear = np.rint(65535 * srgb_decode(np.asarray(picture, np.float64) / 255)).astype(np.uint16)
        stored = pillow_decode(encode(Image.fromarray(linear), "PNG", icc_profile=profile))
        assert stored.mode == "I;16"
        read = to_srgb(stored)
        assert read.mode == "L" and differences([(read, picture)]).max() <= 1
    floats = Image.fromarray(srgb_decode(np.asarray(cells[0], np.float64) / 255).astype(np.float32))
    floats.info["icc_profile"] = profile
    assert differences([(to_srgb(floats), cells[0])]).max() <= 1


# --- CMYK -----------------------------------------------------------------------------------------

DOT_GAIN = 0.75
"""The test press: ink covers device value ** 0.75 of the paper (more than asked), so Pillow's
naive CMYK reading is wrong and only the profile reads the file right."""
SRGB_TO_XYZ_D50 = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
                            [0.0139322, 0.0971045, 0.7141733]])


def s15(value: float) -> int:
    return int(np.floor(value * 65536 + 0.5))


def cmyk_profile(grid: int = 9) -> bytes:
    """An ICC v4 CMYK print profile (LittleCMS has no CMYK profile built in, none is installed).

    Its A2B0 lutAtoBType: A curves (the dot gain), a CLUT (inks filter sRGB-encoded light:
    R' = (1 - C)(1 - K)), M curves (the sRGB curve), then the sRGB-to-XYZ matrix, scaled to the
    PCS's 16-bit XYZ encoding (1.0 + 32767/32768 at 65535).
    """
    identity = b"curv" + bytes(8)
    srgb_curve = b"para" + bytes(4) + struct.pack(">HH5i", 3, 0, *(s15(v) for v in (2.4, 1 / 1.055, 0.055 / 1.055,
                                                                                      1 / 12.92, 0.04045)))
    gain = b"curv" + bytes(4) + struct.pack(">IH", 1, round(DOT_GAIN * 256)) + bytes(2)
    matrix = struct.pack(">12i", *(s15(v) for v in (SRGB_TO_XYZ_D50 / (1 + 32767 / 32768)).ravel()), 0, 0, 0)
    c, m, y, k = np.meshgrid(*[np.linspace(0, 1, grid)] * 4, indexing="ij")  # the first input varies slowest
    table = np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], -1)
    clut = bytes([grid] * 4 + [0] * 12 + [2, 0, 0, 0]) + np.rint(table * 65535).astype(">u2").tobytes()
    offsets, body = [], b""
    for part in (identity * 3, matrix, srgb_curve * 3, clut, gain * 4):  # B, matrix, M, CLUT, A
        offsets.append(32 + len(body))
        body += part + bytes(-len(part) % 4)
    a2b0 = b"mAB " + bytes(4) + bytes([4, 3, 0, 0]) + struct.pack(">5I", *offsets) + body
    desc = b"desc" + bytes(4) + struct.pack(">I", 10) + b"Test CMYK\0" + bytes(78)
    d50 = b"XYZ " + bytes(4) + struct.pack(">3i", s15(0.9642), s15(1.0), s15(0.8249))
    tags = [(b"desc", desc), (b"wtpt", d50), (b"A2B0", a2b0)]
    table_entries, data, start = b"", b"", 128 + 4 + 12 * len(tags)
    for signature, tag in tags:
        table_entries += struct.pack(">4sII", signature, start + len(data), len(tag))
        data += tag + bytes(-len(tag) % 4)
    header = struct.pack(">I4sI4s4s4s6H4s4sI4sIQI3i4s16s28s", start + len(data), b"", 0x04300000, b"prtr", b"CMYK",
                         b"XYZ ", 2024, 1, 1, 0, 0, 0, b"acsp", b"", 0, b"", 0, 0, 0, s15(0.9642), s15(1.0),
                         s15(0.8249), b"", b"", b"")
    return header + struct.pack(">I", len(tags)) + table_entries + data


def on_the_test_press(picture: Image.Image) -> Image.Image:
    """The CMYK device values that print `picture` (all grey in K) on the press cmyk_profile describes."""
    light = np.asarray(picture.convert("RGB"), np.float64) / 255
    black = 1 - light.max(-1, keepdims=True)
    colour = np.clip(1 - light / np.maximum(1 - black, 1e-9), 0, 1) * (black < 1)
    ink = np.concatenate([colour, black], -1)
    return Image.fromarray(np.rint(255 * ink ** (1 / DOT_GAIN)).astype(np.uint8), mode="CMYK")


@pytest.mark.parametrize("fmt,options,mean,largest", [
    ("TIFF", {}, 1.5, 6),  # measured: mean 0.86, max 4 (8-bit device values under a steep dot gain)
    ("JPEG", {"quality": 95}, 2.5, 24),  # measured: mean 1.37, max 15 (an RGB JPEG q95 of them: 2.37, 39)
])
def test_a_cmyk_file_with_a_profile_reads_as_the_original(tinted, fmt, options, mean, largest):
    profile = cmyk_profile()
    managed, unmanaged = [], []
    for picture in tinted:
        data = encode(on_the_test_press(picture), fmt, icc_profile=profile, **options)
        stored = pillow_decode(data)
        assert stored.mode == "CMYK" and stored.info["icc_profile"] == profile
        managed.append((to_srgb(stored), picture))
        unmanaged.append((stored.convert("RGB"), picture))
    found = differences(managed)
    assert found.mean() <= mean and found.max() <= largest, (found.mean(), found.max())
    assert differences(unmanaged).mean() > 3 * mean


def test_a_cmyk_jpeg_without_a_profile_reads_as_before(tinted):
    stored = pillow_decode(encode(tinted[0].convert("CMYK"), "JPEG", quality=95))
    assert to_srgb(stored) is stored


# --- profiles that are ignored, and profiles that are refused -------------------------------------


def renamed_tag(profile: bytes, old: bytes, new: bytes) -> bytes:
    count = struct.unpack(">I", profile[128:132])[0]
    table = profile[132:132 + 12 * count].replace(old, new, 1)
    return profile[:132] + table + profile[132 + 12 * count:]


def test_what_is_not_a_profile_of_the_pixels_is_ignored_as_viewers_ignore_it(cells, tinted):
    adobe, grey = SPACES["Adobe RGB (1998)"].profile, SPACES["linear grey"].profile
    too_many_tags = adobe[:128] + struct.pack(">I", 100000) + adobe[132:]
    for picture, profile, case in (
        (tinted[0], b"not an ICC profile" * 10, "garbage"),
        (tinted[0], adobe[:300], "truncated"),
        (tinted[0], too_many_tags, "a header LittleCMS refuses"),
        (tinted[0], grey, "a grey profile on RGB pixels"),
        (cells[0], adobe, "an RGB profile on grey pixels"),
        (tinted[0].convert("CMYK"), adobe, "an RGB profile on CMYK pixels"),
    ):
        image = pillow_decode(encode(picture, "TIFF" if picture.mode == "CMYK" else "PNG", icc_profile=profile))
        assert to_srgb(image) is image, case
        decode_image(encode(picture, "TIFF" if picture.mode == "CMYK" else "PNG", icc_profile=profile))  # no error


def test_a_profile_that_cannot_be_applied_is_refused_by_name(tinted):
    broken = renamed_tag(rgb_profile(1.0, ADOBE_RGB, "Lacks a curve"), b"gTRC", b"xTRC")
    data = encode(tinted[0], "PNG", icc_profile=broken)
    with pytest.raises(InvalidInput, match=r"colour profile 'Lacks a curve' cannot be converted to sRGB"):
        to_srgb(pillow_decode(data))
    with pytest.raises(InvalidInput, match="'Lacks a curve'"):  # a 400 from the service's decoding too
        decode_image(data)


@pytest.mark.parametrize("device_class", [b"link", b"abst", b"nmcl"])
def test_profiles_that_describe_no_picture_are_refused(tinted, device_class):
    """Device links, abstract and named-colour profiles: no source colour space to convert from."""
    profile = rgb_profile(1.0, ADOBE_RGB, "Not an input profile")
    image = pillow_decode(encode(tinted[0], "PNG", icc_profile=profile[:12] + device_class + profile[16:]))
    with pytest.raises(InvalidInput, match="'Not an input profile' cannot be converted"):
        to_srgb(image)


def test_lab_pixels_pass_on_to_be_refused_by_name_as_before():
    lab = Image.new("RGB", (4, 4), "red").convert("LAB")  # Pillow notes a Lab profile on them
    image = pillow_decode(encode(lab, "TIFF"))
    assert image.mode == "LAB" and image.info["icc_profile"][16:20] == b"Lab "
    assert to_srgb(image) is image
    with pytest.raises(InvalidInput, match="colour mode LAB"):
        image_to_array(to_srgb(image), MALARIA.image)


def test_a_ycbcr_tiff_with_a_profile_is_converted_as_its_rgb(tinted):
    space = SPACES["Adobe RGB (1998)"]
    stored = into(tinted[0], space.profile, "RGB")
    ycbcr = pillow_decode(encode(stored.convert("YCbCr"), "TIFF", icc_profile=space.profile))
    assert ycbcr.mode == "YCbCr"
    read = to_srgb(ycbcr)
    assert read.mode == "RGB" and differences([(read, tinted[0])]).max() <= space.max + 2  # YCbCr rounding


def test_the_result_declares_nothing_and_keeps_other_metadata(tinted):
    space = SPACES["Display P3"]
    image = pillow_decode(encode(into(tinted[0], space.profile, "RGB"), "PNG", icc_profile=space.profile,
                                 dpi=(300, 300)))
    read = to_srgb(image)
    assert read is not image and to_srgb(read) is read
    assert not {"icc_profile", "gamma", "chromaticity", "srgb"} & set(read.info)
    assert read.info["dpi"] == pytest.approx((300, 300), rel=1e-3)


def test_a_grey_picture_stays_grey_for_the_digit_model(digits):
    """sGrey, not RGB: the digits model's L input is what the plain grey file gives."""
    space = SPACES["linear grey"]
    spec = ImageInput(height=32, width=32, color_mode="L", scale=1.0)
    for picture in digits[:5]:
        read = to_srgb(pillow_decode(encode(into(picture, space.profile, "L"), "PNG", icc_profile=space.profile)))
        assert read.mode == "L"
        assert np.abs(image_to_array(read, spec) - image_to_array(picture, spec)).max() <= space.max
