"""Reading a test server's /metrics."""

from __future__ import annotations

import re

import requests

COUNTER = re.compile(r"^bentoml_service_request_total\{(.*)\} (\S+)$", re.MULTILINE)  # labels may hold {name}


def request_counts(url: str) -> dict[tuple[str, int], float]:
    """bentoml_service_request_total by (endpoint label, status)."""
    counts = {}
    for labels, value in COUNTER.findall(requests.get(f"{url}/metrics").text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        counts[fields["endpoint"], int(fields["http_response_code"])] = float(value)
    return counts
