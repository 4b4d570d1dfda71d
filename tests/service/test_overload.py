"""Admission counts rows: the documented maximum request is served, also several at once."""

from __future__ import annotations

import concurrent.futures

import pandas as pd
import pytest
import requests

from service.specs import KOBE

pytestmark = pytest.mark.slow


def test_eight_concurrent_calls_of_the_maximum_rows_are_all_served(server, settings):
    """Each is larger than kobe's max_batch_size (it runs whole, alone); none is shed."""
    rows = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet")
    records = rows.sample(KOBE.max_records_per_call, replace=True, random_state=0).to_json(orient="records")
    body = '{"records": ' + records + "}"

    def call(_: int) -> requests.Response:
        return requests.post(server.url + "/kobe", data=body, headers={"Content-Type": "application/json"},
                             timeout=60)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text[:200] for a in answers if a.status_code != 200]
    assert all(len(a.json()["predictions"]) == KOBE.max_records_per_call for a in answers)
