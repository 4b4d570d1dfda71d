"""The V2 codec (service/v2.py) on hostile shapes."""

from __future__ import annotations

import pytest

from service.errors import InvalidInput
from service.v2 import _row_major, as_datatype


def test_v2_data_is_flattened_without_recursion_and_depth_is_bounded():
    assert _row_major("x", [[1, 2], [3, 4]], [2, 2]) == [1, 2, 3, 4]
    assert _row_major("x", [1, 2, 3, 4], [2, 2]) == [1, 2, 3, 4]
    deep: list = [1]
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    with pytest.raises(InvalidInput, match="nested deeper than its 4-d shape"):
        _row_major("x", deep, [1, 1, 1, 1])


@pytest.mark.parametrize(("data", "shape"), [
    ([[1, 2], [3, [4]]], [2, 2]),  # ragged
    ([[1, 2, 3], [4]], [2, 2]),  # ragged, with the right count
    ([[1, 2], [3, 4]], [1, 4]),  # nesting that contradicts the shape
    ([[1, 2, 3, 4]], [2, 2]),
])
def test_nesting_must_follow_the_shape(data, shape):
    with pytest.raises(InvalidInput, match="must follow the shape|nested deeper"):
        _row_major("x", data, shape)


@pytest.mark.parametrize(("datatype", "value"), [("UINT8", -5), ("INT8", 200), ("INT64", 10**400),
                                                  ("FP32", 10**400), ("FP16", 70000.0), ("FP32", 1e39)])
def test_values_outside_their_datatype_are_refused(datatype, value):
    with pytest.raises(InvalidInput, match=f"outside {datatype}'s range"):
        as_datatype("x", datatype, [1, value])


def test_json_data_is_read_as_its_datatype_so_json_and_binary_agree():
    import numpy as np

    row = [6.0, 2.9, 4.8, 1.711891369482983]
    assert as_datatype("x", "FP32", row) == np.asarray(row, "<f4").tolist() != row
    assert as_datatype("x", "FP64", row) == row
    with pytest.raises(InvalidInput, match="must be integers"):
        as_datatype("x", "INT32", [1, 2.5])
