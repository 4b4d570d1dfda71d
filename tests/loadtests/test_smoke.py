"""A short, bounded locust run against the real server: any failed request fails it."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


def test_smoke_load_has_no_errors(server, settings, tmp_path):
    locust = Path(sys.executable).with_name("locust")
    prefix = tmp_path / "smoke"
    done = subprocess.run(
        [str(locust), "-f", "loadtests/locustfile.py", "--config", "loadtests/locust.conf", "--host", server.url,
         "--users", "8", "--spawn-rate", "8", "--run-time", "20s", "--csv", str(prefix),
         "--html", str(tmp_path / "report.html")],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
        # Locust shares the 2 cores with the server here: the latency bounds are for a quiet machine.
        env={**os.environ, "DATA_DIR": str(settings.data_dir), "LOADTEST_P99_SCALE": "10"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(f"{prefix}_stats.csv") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 100
    assert int(total["Failure Count"]) == 0
    for endpoint in ("/iris", "/kobe", "/malaria", "/digits/pixels", "/models", "/v2/models/iris/infer"):
        assert int(rows[endpoint]["Request Count"]) > 0, endpoint
    report = (tmp_path / "report.html").read_text()
    assert len(report) > 10_000
    section = report[report.index('<section id="thresholds"'):report.index("</section>")]
    assert "Thresholds: passed" in section and "failure ratio" in section
    assert "POST /iris p99</td><td>&lt;= 1000 ms" in section  # the bound, scaled by LOADTEST_P99_SCALE=10
    assert re.search(r"POST /iris p99</td><td>[^<]*</td><td>\d+ ms</td><td[^>]*>pass<", section), section
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", section)  # the text is escaped: every cell whole
    assert len(cells) == 4 * section.count("<tr><td>") and all(c.strip() for c in cells), section


def test_a_failed_threshold_fails_the_run_and_heads_the_report(server, settings, tmp_path):
    """A bound no request can meet: exit 1, FAIL on stdout and in the HTML report."""
    locust = Path(sys.executable).with_name("locust")
    done = subprocess.run(
        [str(locust), "-f", "loadtests/locustfile.py", "--config", "loadtests/locust.conf", "--host", server.url,
         "--users", "4", "--spawn-rate", "4", "--run-time", "8s", "--csv", str(tmp_path / "strict"),
         "--html", str(tmp_path / "strict.html")],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATA_DIR": str(settings.data_dir), "LOADTEST_P99_SCALE": "0.00001"},
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "THRESHOLD FAILED: POST /iris p99" in done.stdout + done.stderr
    report = (tmp_path / "strict.html").read_text()
    assert "Thresholds: FAILED" in report and ">FAIL<" in report


def test_a_run_without_its_data_stops_at_once_and_says_why(tmp_path):
    """It used to report 0 failures while every kobe and malaria task raised FileNotFoundError."""
    locust = Path(sys.executable).with_name("locust")
    done = subprocess.run(
        [str(locust), "-f", "loadtests/locustfile.py", "--headless", "--host", "http://127.0.0.1:9",
         "--users", "1", "--run-time", "5s", "--only-summary"],
        cwd=PROJECT, capture_output=True, text=True, timeout=60, env={**os.environ, "DATA_DIR": str(tmp_path)},
    )
    assert done.returncode != 0
    assert f"DATA_DIR={tmp_path} lacks" in done.stderr + done.stdout
    assert "set DATA_DIR to the folder holding kobe/ and malaria/" in done.stderr + done.stdout
