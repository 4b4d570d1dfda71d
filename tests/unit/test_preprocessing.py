"""Image and record preprocessing, shared by training and serving."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from service.preprocessing import (
    KOBE_CATEGORY_CODES,
    InvalidInput,
    decode_image,
    encoded_image_to_array,
    image_to_array,
    kobe_model_matrix,
    kobe_shot_context,
)
from service.schemas import validated_frame
from service.specs import DIGITS, IRIS, KOBE, MALARIA


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_malaria_training_image_becomes_a_50x50x1_unit_array(malaria_image_paths):
    data = malaria_image_paths["Parasitized"][0].read_bytes()
    array = encoded_image_to_array(data, MALARIA.image)
    assert array.shape == (50, 50, 1) and array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0
    assert array.std() > 0.01  # a real picture, not a constant


@pytest.mark.parametrize("fmt,mode,size", [("PNG", "RGB", (137, 161)), ("JPEG", "RGB", (120, 90)),
                                           ("JPEG", "L", (64, 64)), ("PNG", "RGBA", (80, 80)),
                                           ("PNG", "L", (50, 50))])
def test_any_size_mode_and_format_gives_the_model_shape(malaria_image_paths, fmt, mode, size):
    original = Image.open(malaria_image_paths["Uninfected"][0])
    variant = original.convert(mode).resize(size)
    array = encoded_image_to_array(encode(variant, fmt), MALARIA.image)
    assert array.shape == (50, 50, 1)
    reference = encoded_image_to_array(malaria_image_paths["Uninfected"][0].read_bytes(), MALARIA.image)
    # The same cell after resizing and (for JPEG) lossy coding stays close to the original.
    assert np.abs(array - reference).mean() < 0.08


def test_rgb_and_grayscale_of_one_image_agree(malaria_image_paths):
    gray = Image.open(malaria_image_paths["Parasitized"][1]).convert("L")
    rgb = Image.merge("RGB", (gray, gray, gray))
    a = encoded_image_to_array(encode(gray), MALARIA.image)
    b = encoded_image_to_array(encode(rgb), MALARIA.image)
    assert np.abs(a - b).max() <= 1 / 255 + 1e-6


def render_digit(pixels: np.ndarray, scale: int = 4) -> Image.Image:
    """An sklearn digit (0-16, ink high) as a dark-on-light grayscale picture."""
    ink = np.kron(pixels.reshape(8, 8), np.ones((scale, scale))) * 255 / 16
    return Image.fromarray((255 - ink).round().astype(np.uint8), mode="L")


def test_digits_preprocessing_recovers_scikit_learn_pixels_from_a_rendered_image():
    from sklearn.datasets import load_digits

    digits = load_digits().data[:50]
    for pixels in digits:
        for fmt in ("PNG", "JPEG"):
            options = {"quality": 95} if fmt == "JPEG" else {}
            array = encoded_image_to_array(encode(render_digit(pixels), fmt, **options), DIGITS.image).reshape(-1)
            tolerance = 0.1 if fmt == "PNG" else 1.5
            assert np.abs(array - pixels).max() <= tolerance


def test_light_on_dark_digit_images_are_not_inverted():
    from sklearn.datasets import load_digits

    pixels = load_digits().data[7]
    ink = Image.fromarray((np.kron(pixels.reshape(8, 8), np.ones((4, 4))) * 255 / 16).astype(np.uint8))
    array = image_to_array(ink, DIGITS.image).reshape(-1)
    assert np.abs(array - pixels).max() <= 0.1


def test_truncated_image_is_refused(malaria_image_paths):
    data = malaria_image_paths["Parasitized"][0].read_bytes()
    with pytest.raises(InvalidInput, match="corrupt|truncated|readable"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize("payload", [b"", b"hello, I am not an image", b"%PDF-1.4 fake pdf"])
def test_non_images_are_refused(payload):
    with pytest.raises(InvalidInput):
        decode_image(payload)


def test_other_image_formats_are_refused_naming_the_accepted_ones():
    with pytest.raises(InvalidInput, match="PNG, JPEG, WebP, BMP, TIFF or GIF"):
        decode_image(encode(Image.new("L", (10, 10)), "ICO"))


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("L", (5000, 5000)), "PNG", optimize=True)
    assert len(bomb) < 100_000  # tiny on the wire, 25 megapixels declared
    with pytest.raises(InvalidInput, match="5000x5000"):
        decode_image(bomb)


def iris_record(**overrides):
    return {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, **overrides}


def test_records_become_a_frame_in_spec_order():
    frame = validated_frame([iris_record(), iris_record(sepal_length=6)], IRIS)
    assert list(frame.columns) == IRIS.feature_names
    assert frame["sepal_length"].tolist() == [5.1, 6.0]


@pytest.mark.parametrize("record,message", [
    ({"sepal_length": 5.1}, "sepal_width: Field required"),
    (iris_record(petal_width=None), "petal_width: Input should be a valid number"),
    (iris_record(petal_width="wide"), "petal_width: Input should be a valid number"),
    (iris_record(petal_width=float("nan")), "petal_width: Input should be a finite number"),
    (iris_record(petal_width=float("inf")), "petal_width: Input should be a finite number"),
    (iris_record(petal_width=-1), "petal_width: Input should be greater than or equal to 0"),
    (iris_record(colour="red"), "colour: Extra inputs are not permitted"),
])
def test_invalid_records_name_the_record_and_field(record, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        validated_frame([iris_record(), record], IRIS)
    assert "record 1" in str(caught.value)


def test_kobe_checks_categories_and_integers(settings):
    import pandas as pd

    row = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").iloc[0].to_dict()
    frame = validated_frame([row], KOBE)  # a raw Kaggle row, ids and all
    assert list(frame.columns) == KOBE.feature_names
    with pytest.raises(InvalidInput, match="action_type: Input should be one of 57 values, e.g. 'Alley Oop Dunk Shot'"):
        validated_frame([{**row, "action_type": "Moonshot"}], KOBE)
    with pytest.raises(InvalidInput, match="period: Input should be a valid integer"):
        validated_frame([{**row, "period": 2.5}], KOBE)


def test_an_unknown_category_names_at_most_three_allowed_values():
    from service.schemas import category_error

    assert category_error(("a", "b")) == "Input should be one of 'a', 'b'"
    assert category_error(("a", "b", "c")) == "Input should be one of 'a', 'b', 'c'"
    many = category_error(tuple(f"value {i}" for i in range(57)))
    assert many.startswith("Input should be one of 57 values, e.g. 'value 0', 'value 1', 'value 2'")
    assert "value 3" not in many and len(many) < 120


def test_kobe_shot_context_derives_home_angle_and_clock(settings):
    import pandas as pd

    rows = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(200)
    derived = kobe_shot_context(validated_frame(rows.to_dict("records"), KOBE))
    assert (derived["home"] == rows["matchup"].str.contains("vs.").astype(int).to_numpy()).all()
    clock = rows["minutes_remaining"] * 60 + rows["seconds_remaining"]
    assert (derived["clock"] == clock.to_numpy()).all()
    assert (derived["angle"][rows["loc_x"].to_numpy() == 0] == 0).all()
    assert (derived["angle"][rows["loc_x"].to_numpy() > 0] > 0).all()


def test_kobe_model_matrix_codes_categories_by_their_position_in_the_spec(settings):
    import pandas as pd
    from sklearn.preprocessing import OrdinalEncoder

    rows = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(300)
    frame = validated_frame(rows.to_dict("records"), KOBE)
    frame.loc[frame.index[0], "action_type"] = "a shot no one has seen"  # unknown: -1 ("missing")
    matrix = kobe_model_matrix(frame)
    categorical = list(KOBE_CATEGORY_CODES)
    numeric = [f.name for f in KOBE.numeric_features]
    assert matrix.shape == (len(frame), len(categorical) + len(numeric) + 3)
    lists = {f.name: list(f.categories) for f in KOBE.categorical_features}
    reference = OrdinalEncoder(categories=[lists[name] for name in categorical],
                               handle_unknown="use_encoded_value", unknown_value=-1)
    np.testing.assert_array_equal(matrix[:, :len(categorical)], reference.fit_transform(frame[categorical]))
    assert matrix[0, 0] == -1
    np.testing.assert_array_equal(matrix[:, len(categorical):-3], frame[numeric].to_numpy(np.float64))
    assert "matchup" not in categorical  # only its home/away fact is an input


def test_records_frame_is_the_frame_typed_frame_gives(settings):
    """The served batch (records_frame) and training (typed_frame) hand the model the same frame."""
    import json

    import pandas as pd

    from service.preprocessing import records_frame, typed_frame

    rows = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(50)
    records = validated_frame(json.loads(rows.to_json(orient="records")), KOBE).to_dict("records")
    expected = typed_frame(pd.DataFrame.from_records(records, columns=KOBE.feature_names), KOBE)
    pd.testing.assert_frame_equal(records_frame(records, KOBE), expected)
    iris = [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]
    assert records_frame(iris, IRIS).dtypes.tolist() == [np.float64] * 4


def test_base64_variants_that_are_unambiguous_are_read():
    import base64

    from service.preprocessing import decode_base64

    data = bytes(range(256)) * 3
    standard = base64.b64encode(data).decode()
    wrapped = "\n".join(standard[i:i + 76] for i in range(0, len(standard), 76)) + "\n"  # GNU base64
    url_safe_unpadded = base64.urlsafe_b64encode(data).decode().rstrip("=")
    data_url = "data:image/png;base64," + standard
    assert decode_base64([standard, wrapped, url_safe_unpadded, data_url]) == [data] * 4


@pytest.mark.parametrize("text,reason", [
    ("***not base64***", "character '*' at position 0"),
    ("AAAA=AAA", "'=' padding inside"),
    ("AAAAA", "5 base64 characters cannot encode whole bytes"),
    ("A-A+", "it mixes the standard (+/) and URL-safe (-_) alphabets"),
])
def test_base64_that_cannot_be_read_is_refused_with_a_reason(text, reason):
    from service.preprocessing import decode_base64

    with pytest.raises(InvalidInput, match=re.escape(f"images[0]: not valid base64: {reason}")):
        decode_base64([text])
