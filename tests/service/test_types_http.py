"""Strict number typing over real HTTP: what the README promises about mistyped fields."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import requests

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}
IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.mark.parametrize("value,reason", [(True, "boolean"), ("1_0", "string"), ("10", "string")])
def test_iris_refuses_booleans_and_numeric_strings_naming_the_field(server, value, reason):
    response = requests.post(f"{server.url}/iris", json={"records": [{**IRIS_ROW, "petal_length": value}]})
    assert response.status_code == 400, response.text
    assert "petal_length" in response.text and f"not a {reason}" in response.text


def test_kobe_integer_takes_a_whole_float_and_refuses_a_fraction(server, settings):
    raw = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(1)
    row = json.loads(raw.to_json(orient="records"))[0]
    assert requests.post(f"{server.url}/kobe", json={"records": [{**row, "period": 2.0}]}).status_code == 200
    refused = requests.post(f"{server.url}/kobe", json={"records": [{**row, "period": 2.5}]})
    assert refused.status_code == 400 and "period" in refused.text and "fractional" in refused.text


def test_digit_pixels_refuse_booleans(server):
    response = requests.post(f"{server.url}/digits/pixels", json={"pixels": [[True] * 64]})
    assert response.status_code == 400 and "not a boolean" in response.text, response.text


def test_a_duplicated_json_key_keeps_its_last_value(server):
    """As the README says: JSON objects with a repeated key are read with the last value."""
    rest = '"sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2'
    first = requests.post(f"{server.url}/iris", headers=JSON,
                          data=f'{{"records": [{{"sepal_length": 99, "sepal_length": 5.1, {rest}}}]}}')
    plain = requests.post(f"{server.url}/iris", json={"records": [IRIS_ROW]})
    assert first.status_code == 200, first.text  # 99 would be out of range: the last value was used
    assert first.json()["predictions"] == plain.json()["predictions"]
    last = requests.post(f"{server.url}/iris", headers=JSON,
                         data=f'{{"records": [{{"sepal_length": 5.1, "sepal_length": 99, {rest}}}]}}')
    assert last.status_code == 400 and "sepal_length" in last.text
