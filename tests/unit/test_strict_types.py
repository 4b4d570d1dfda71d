"""Numbers are numbers: no booleans or strings coerced, integers whole; errors name the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from service.preprocessing import InvalidInput
from service.routes import pixel_row
from service.schemas import RECORD_MODELS, validated_records
from service.specs import DIGITS, IRIS, KOBE

IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def kobe_row(settings) -> dict:
    import pandas as pd

    raw = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(1)
    return json.loads(raw.to_json(orient="records"))[0]


NOT_NUMBERS = [(True, "not a boolean"), (False, "not a boolean"), ("1_0", "not a string"), ("10", "not a string"),
               ("5.1", "not a string"), (" 5 ", "not a string"), ("1e1", "not a string"), ("nan", "not a string"),
               (None, "valid (number|integer)"), ([5.1], "valid (number|integer)"),
               ({"value": 5.1}, "valid (number|integer)")]


@pytest.mark.parametrize("value,message", NOT_NUMBERS)
def test_a_float_feature_refuses_what_is_not_a_number(value, message):
    with pytest.raises(InvalidInput, match=f"record 0: sepal_width: Input should be a .*{message}"):
        validated_records([{**IRIS_ROW, "sepal_width": value}], IRIS)


@pytest.mark.parametrize("value,message", NOT_NUMBERS)
def test_an_integer_feature_refuses_what_is_not_a_number(kobe_row, value, message):
    with pytest.raises(InvalidInput, match=f"record 0: period: Input should be a .*{message}"):
        validated_records([{**kobe_row, "period": value}], KOBE)


@pytest.mark.parametrize("value", [True, "16", "1_6"])
def test_digit_pixels_refuse_booleans_and_strings(value):
    pixels = [0.0] * 63 + [value]
    with pytest.raises(ValidationError, match="not a"):
        TypeAdapter(pixel_row(DIGITS)).validate_python(pixels)
    with pytest.raises(ValidationError, match="pixel_63"):
        RECORD_MODELS["digits"].model_validate({**{f"pixel_{i}": 0 for i in range(63)}, "pixel_63": value})


@pytest.mark.parametrize("value,kept", [(5, 5), (5.0, 5), (np.int64(5), 5), (np.float64(5.0), 5)])
def test_an_integer_feature_takes_whole_numbers_in_any_numeric_type(kobe_row, value, kept):
    (record,) = validated_records([{**kobe_row, "period": value}], KOBE)
    assert record["period"] == kept and type(record["period"]) is int


@pytest.mark.parametrize("value", [5.5, 1.000001, np.float64(2.5)])
def test_an_integer_feature_refuses_fractions(kobe_row, value):
    with pytest.raises(InvalidInput, match="period: Input should be a valid integer, got a number with a fractional"):
        validated_records([{**kobe_row, "period": value}], KOBE)


@pytest.mark.parametrize("value", [5, 5.1, np.float64(5.1), np.int32(5)])
def test_a_float_feature_takes_ints_floats_and_numpy_numbers(value):
    (record,) = validated_records([{**IRIS_ROW, "sepal_width": value}], IRIS)
    assert record["sepal_width"] == pytest.approx(float(value)) and type(record["sepal_width"]) is float


@pytest.mark.parametrize("model,row,field", [(RECORD_MODELS["iris"], IRIS_ROW, "petal_length"),
                                             (RECORD_MODELS["kobe"], None, "loc_x")])
def test_json_mode_is_as_strict_as_python_mode(kobe_row, model, row, field):
    """A request body parsed straight from JSON text gets the same checks."""
    row = row or kobe_row
    for value in ("true", '"12"', '"1_0"'):
        text = json.dumps(row).replace(f'"{field}": {json.dumps(row[field])}', f'"{field}": {value}')
        assert value in text
        with pytest.raises(ValidationError, match=field):
            model.model_validate_json(text)
    assert model.model_validate_json(json.dumps(row)).model_dump()[field] == row[field]


def test_the_openapi_schema_still_says_number_and_integer():
    schema = RECORD_MODELS["iris"].model_json_schema()["properties"]["sepal_width"]
    assert schema["type"] == "number" and schema["minimum"] == 0
    assert RECORD_MODELS["kobe"].model_json_schema()["properties"]["period"]["type"] == "integer"
