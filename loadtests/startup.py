"""Time to ready and memory of `bentoml serve`, and where the start-up seconds go.

    BENTOML_HOME=/tmp/bh_full .venv/bin/python -m loadtests.startup --rounds 5 --out docs/startup.md

With --project given twice (a checkout before a change, e.g. from `git worktree add`, and
this one), the rounds alternate between them, so the machine's drift hits both alike.

Each round starts a fresh server (its own BENTOML_HOME over the same model store), polls
/livez and /readyz every 10 ms from the moment the process is spawned, reads the worker's
log for each model's load and warm-up time, then sends every model a few requests and
reads the resident memory of the arbiter and its workers. The import times of `bentoml`
and of the service module are measured in fresh interpreters beside it: `bentoml serve`
imports the service once in the arbiter (to read its configuration) and once per worker.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from loadtests.server import PROJECT, Server, tree_rss_mb

LOADED = re.compile(r"loaded (\w+):\S+ in ([\d.]+) s, warmed up in ([\d.]+) s")
IRIS = {"records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--project", type=Path, action="append",
                        help="a checkout to start (repeatable; default: this one)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "data")),
                        help="the data folder (default: $DATA_DIR, else ./data)")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    return parser.parse_args()


def import_seconds(module: str, project: Path) -> float:
    """Wall time of a fresh interpreter that imports `module` and exits."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=project,
                   env={**os.environ, "PYTHONPATH": str(project)})
    return time.perf_counter() - started


def first_200(url: str, deadline: float) -> float:
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return time.monotonic()
        except requests.RequestException:
            pass
        time.sleep(0.01)
    raise TimeoutError(url)


def one_round(data_dir: Path, project: Path) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="startup-"))
    log = folder / "serve.log"
    started = time.monotonic()
    server = Server(env={"PYTHONPATH": str(project)}, log=log, own_home=folder / "home", project=project)
    try:
        live = first_200(server.url + "/livez", started + 120)
        ready = first_200(server.url + "/readyz", started + 120)
        figures = {"live_s": live - started, "ready_s": ready - started,
                   "rss_ready_mb": tree_rss_mb(server.pid)}
        cell = next((data_dir / "malaria" / "cell_images" / "Parasitized").glob("*.png")).read_bytes()
        for _ in range(50):  # every model answers, so each has run on its serving threads
            assert requests.post(server.url + "/iris", json=IRIS, timeout=10).status_code == 200
            assert requests.post(server.url + "/malaria", files=[("images", ("c.png", cell, "image/png"))] * 8,
                                 timeout=10).status_code == 200
            assert requests.post(server.url + "/digits/pixels", json={"pixels": [[0.0] * 64]},
                                 timeout=10).status_code == 200
        figures["rss_after_requests_mb"] = tree_rss_mb(server.pid)
    finally:
        server.stop()
    for name, load, warm in LOADED.findall(log.read_text()):
        figures[f"{name}_load_s"] = float(load)
        figures[f"{name}_warm_up_s"] = float(warm)
    return figures


def main() -> int:
    args = parse_args()
    projects = args.project or [PROJECT]
    rounds: dict[Path, list[dict[str, float]]] = {project: [] for project in projects}
    for number in range(args.rounds):
        for project in projects if number % 2 == 0 else projects[::-1]:
            figures = one_round(args.data_dir, project)
            figures["import_bentoml_s"] = import_seconds("bentoml", project)
            figures["import_service_s"] = import_seconds("service.service", project)
            rounds[project].append(figures)
            print(f"round {number + 1}/{args.rounds} {project}: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), file=sys.stderr)
    tables = []
    for project, runs in rounds.items():
        lines = [f"{project}:", "", "| measure | median | min | max |", "|---|---|---|---|"]
        for key in runs[0]:
            values = [r[key] for r in runs]
            lines.append(f"| {key} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
        tables.append("\n".join(lines))
    table = "\n\n".join(tables)
    print(table)
    if args.out:
        args.out.write_text(f"`python -m loadtests.startup --rounds {args.rounds}`, "
                            f"{time.strftime('%Y-%m-%d %H:%M')}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
