"""The OpenAPI document tells the truth: schemathesis fuzzes all of /docs.json against the
running server with every check on (server errors, documented statuses, content types,
headers and body schemas, valid data accepted, invalid data refused), bounded in time.
schemathesis.toml at the project root says which refusals of schema-valid requests are
expected (images and tensors a schema cannot describe fully)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
SECONDS = 60


@pytest.mark.parametrize("which", ["server", "shadowed_server", "keyed_server"])
def test_schemathesis_finds_nothing_in_the_whole_document(which, request):
    """Plain; with every model shadowed by a challenger (the shadow must change nothing);
    with API keys required, authorized by a key of every scope (schemathesis also checks
    that each secured operation refuses a request without it)."""
    server = request.getfixturevalue(which)
    schemathesis = Path(sys.executable).with_name("schemathesis")
    auth = ["--header", f"Authorization: Bearer {server.api_keys['all']}"] if which == "keyed_server" else []
    done = subprocess.run(
        [str(schemathesis), "run", f"{server.url}/docs.json", *auth, "--checks", "all", "--workers", "1",
         "--phases", "examples,coverage,fuzzing", "--max-time", str(SECONDS), "--seed", "20261202"],
        cwd=PROJECT, capture_output=True, text=True, timeout=SECONDS + 240)
    summary = done.stdout[-3000:]
    assert done.returncode == 0, summary
    assert " passed" in summary and "failure" not in summary.lower(), summary
    assert "Traceback" not in server.log.read_text()
