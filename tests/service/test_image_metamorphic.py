"""The same picture in any encoding gets the same answer from the real server.

Real cells (20 of each class) and real scikit-learn digits (20), each sent as the plain
8-bit PNG and in every encoding of tests/images.py. Lossless encodings must give the same
labels and probabilities (PROBABILITY_TOLERANCE, the model's float32 noise); JPEG-coded
ones probabilities within JPEG_PROBABILITY_TOLERANCE and the same label wherever the
plain picture's answer is not a near tie.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
from PIL import Image

from service.specs import MALARIA
from tests.images import LOSSLESS, LOSSY, encode, render_digit
from tests.service.test_endpoints import check

pytestmark = pytest.mark.slow

PROBABILITY_TOLERANCE = 1e-5
JPEG_PROBABILITY_TOLERANCE = 0.1
NEAR_TIE = 0.2
"""A JPEG-coded picture may change the label only where the plain picture's top two
probabilities are closer than this."""


@pytest.fixture(scope="module")
def pictures(malaria_image_paths) -> dict[str, list[Image.Image]]:
    from sklearn.datasets import load_digits

    cells = [Image.open(p) for c in ("Parasitized", "Uninfected") for p in malaria_image_paths[c][:20]]
    return {"malaria": cells, "digits": [render_digit(p) for p in load_digits().data[:20]]}


def post_files(server, route: str, files: list[bytes]) -> requests.Response:
    return requests.post(f"{server.url}/{route}", files=[("images", (f"{i}.img", f)) for i, f in enumerate(files)])


def served(server, route: str, files: list[bytes]) -> np.ndarray:
    return check(post_files(server, route, files), len(files))[1]


@pytest.fixture(scope="module")
def reference(server, pictures) -> dict[str, np.ndarray]:
    """Probabilities for the plain 8-bit PNGs."""
    return {route: served(server, route, [encode(p) for p in pictures[route]]) for route in pictures}


@pytest.mark.parametrize("route", ["malaria", "digits"])
@pytest.mark.parametrize("encoding", list(LOSSLESS))
def test_lossless_encodings_get_the_same_answer(server, pictures, reference, route, encoding):
    probabilities = served(server, route, [LOSSLESS[encoding](p) for p in pictures[route]])
    np.testing.assert_array_equal(probabilities.argmax(axis=1), reference[route].argmax(axis=1))
    np.testing.assert_allclose(probabilities, reference[route], atol=PROBABILITY_TOLERANCE)


@pytest.mark.parametrize("route", ["malaria", "digits"])
@pytest.mark.parametrize("encoding", list(LOSSY))
def test_jpeg_encodings_get_the_same_answer_within_the_tolerance(server, pictures, reference, route, encoding):
    probabilities = served(server, route, [LOSSY[encoding](p) for p in pictures[route]])
    np.testing.assert_allclose(probabilities, reference[route], atol=JPEG_PROBABILITY_TOLERANCE)
    top_two = np.sort(reference[route], axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] >= NEAR_TIE
    assert clear.sum() >= len(clear) // 2  # the comparison below covers most pictures
    np.testing.assert_array_equal(probabilities.argmax(axis=1)[clear], reference[route].argmax(axis=1)[clear])


def test_sixteen_bit_cells_keep_their_label_on_every_route(server, pictures, reference):
    """The issue's case: 16-bit cells were clipped to white and flipped to 'Uninfected'."""
    sixteen = [LOSSLESS["PNG 16-bit gray"](cell) for cell in pictures["malaria"]]
    texts = [base64.b64encode(data).decode() for data in sixteen]
    by_base64 = check(requests.post(f"{server.url}/malaria/base64", json={"images": texts}), len(texts))[1]
    v2 = requests.post(f"{server.url}/v2/models/malaria/infer",
                       json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    labels = [MALARIA.class_names[i] for i in reference["malaria"].argmax(axis=1)]
    assert {"Parasitized", "Uninfected"} <= set(labels)  # both classes are in the comparison
    assert [MALARIA.class_names[i] for i in by_base64.argmax(axis=1)] == labels
    assert outputs["label"] == labels
    np.testing.assert_allclose(by_base64, reference["malaria"], atol=PROBABILITY_TOLERANCE)
    np.testing.assert_allclose(np.reshape(outputs["probabilities"], (len(texts), 2)), reference["malaria"],
                               atol=PROBABILITY_TOLERANCE)


def test_digit_images_over_v2_read_the_same_as_multipart(server, pictures, reference):
    texts = [base64.b64encode(LOSSY["JPEG EXIF-rotated (6) q95"](d)).decode() for d in pictures["digits"]]
    v2 = requests.post(f"{server.url}/v2/models/digits/infer",
                       json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]})
    assert v2.status_code == 200, v2.text
    probabilities = np.reshape({o["name"]: o["data"] for o in v2.json()["outputs"]}["probabilities"], (-1, 10))
    np.testing.assert_allclose(probabilities, reference["digits"], atol=JPEG_PROBABILITY_TOLERANCE)
    assert (probabilities.argmax(axis=1) == reference["digits"].argmax(axis=1)).mean() >= 0.9


def animated(picture: Image.Image) -> bytes:
    return encode(picture, "GIF", save_all=True, append_images=[picture.transpose(Image.Transpose.ROTATE_90)])


@pytest.mark.parametrize("route", ["malaria", "digits"])
@pytest.mark.parametrize("make,fragment", [
    (animated, "more than one frame"),
    (lambda p: encode(p, "ICO"), "PNG, JPEG, WebP, BMP, TIFF or GIF"),
    (lambda p: encode(p, "PNG")[:60], "corrupt or truncated"),
])
def test_refused_files_get_a_400_that_says_why(server, pictures, route, make, fragment):
    response = post_files(server, route, [encode(pictures[route][0]), make(pictures[route][1])])
    assert response.status_code == 400, response.text
    assert "images[1]" in response.text and fragment in response.text, response.text


def test_the_accepted_formats_are_documented_on_the_image_routes(server):
    from service.preprocessing import ACCEPTED_FORMATS_TEXT

    paths = requests.get(f"{server.url}/docs.json").json()["paths"]
    for route in ("/digits", "/malaria", "/digits/base64", "/malaria/base64"):
        assert ACCEPTED_FORMATS_TEXT in str(paths[route]), route


def test_models_lists_what_transparency_becomes(server):
    images = {m["name"]: m["image"] for m in requests.get(f"{server.url}/models").json()["models"] if m["image"]}
    assert images["malaria"]["transparent_becomes"] == MALARIA.image.transparent_becomes == "black"
    assert images["digits"]["transparent_becomes"] == "contrast"


# --- colour-managed files: the picture a colour-managed viewer shows gets the same answer ---

def linear_grey_icc(picture: Image.Image) -> bytes:
    """The grey picture stored as linear light with a "Gray Gamma 1.0" profile embedded."""
    from service.colour import grey_profile

    linear = (np.asarray(picture.convert("L"), np.float64) / 255.0)
    linear = np.where(linear <= 0.04045, linear / 12.92, ((linear + 0.055) / 1.055) ** 2.4)  # sRGB decode
    return encode(Image.fromarray(np.rint(linear * 255).astype(np.uint8)), icc_profile=grey_profile(1.0))


def linear_by_gama(picture: Image.Image) -> bytes:
    """The same linear levels declared by a PNG gAMA of 1.0 instead of a profile."""
    from PIL import PngImagePlugin

    stored = Image.open(io.BytesIO(linear_grey_icc(picture)))
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", (100000).to_bytes(4, "big"))
    return encode(Image.fromarray(np.asarray(stored)), pnginfo=info)


def adobe_rgb_icc(picture: Image.Image) -> bytes:
    """The picture converted into Adobe RGB (1998), its profile embedded."""
    from PIL import ImageCms

    from service.colour import rgb_profile

    profile = rgb_profile(563 / 256, (0.3127, 0.3290, 0.64, 0.33, 0.21, 0.71, 0.15, 0.06), "Adobe RGB (1998)")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    stored = ImageCms.profileToProfile(picture.convert("RGB"), srgb, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                       renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")
    stored.info.clear()
    return encode(stored, icc_profile=profile)


COLOUR_MANAGED = {"linear grey ICC": linear_grey_icc, "PNG gAMA 1.0": linear_by_gama, "Adobe RGB ICC": adobe_rgb_icc}
COLOUR_PROBABILITY_TOLERANCE = 0.1
"""8-bit linear light keeps few dark levels (sRGB 0-12 become 0 or 1): up to 6 levels off
in the darkest pixels after conversion, so the lossy tolerance, not the lossless one."""


@pytest.mark.parametrize("route", ["malaria", "digits"])
@pytest.mark.parametrize("declared", list(COLOUR_MANAGED))
def test_a_colour_managed_file_gets_the_answer_of_the_picture_it_shows(server, pictures, reference, route,
                                                                       declared):
    """Read without colour management, linear grey flipped 134 of 400 cells (issue 21)."""
    probabilities = served(server, route, [COLOUR_MANAGED[declared](p) for p in pictures[route]])
    np.testing.assert_allclose(probabilities, reference[route], atol=COLOUR_PROBABILITY_TOLERANCE)
    top_two = np.sort(reference[route], axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] >= NEAR_TIE
    np.testing.assert_array_equal(probabilities.argmax(axis=1)[clear], reference[route].argmax(axis=1)[clear])
