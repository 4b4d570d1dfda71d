"""The V2 codec (service/v2.py) on hostile shapes."""

from __future__ import annotations

import pytest

from service.errors import InvalidInput
from service.v2 import _row_major


def test_v2_data_is_flattened_without_recursion_and_depth_is_bounded():
    assert _row_major("x", [[1, 2], [3, [4]]], 3) == [1, 2, 3, 4]
    deep: list = [1]
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    with pytest.raises(InvalidInput, match="nested deeper than its 4-d shape"):
        _row_major("x", deep, 4)
