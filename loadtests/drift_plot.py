"""Reference vs recent histograms of a served model's drifted features (GET /models/{name}/drift).

    python -m loadtests.drift_plot kobe --out drift-kobe.png
    # replay rows first, e.g. random 3-point shots of the prod file into a fresh server:
    python -m loadtests.drift_plot kobe --replay $DATA_DIR/kobe/dataset_kobe_prod.parquet --out drift-kobe.png

Needs matplotlib (the `train` extra). Plots the flagged features (and the predictions when
they drifted); when nothing drifted, the features with the largest statistics.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import requests

MAX_PANELS = 6


def replay(url: str, model: str, path: Path, rows: int, seed: int = 0) -> None:
    """POST `rows` random rows of a CSV/Parquet file to a tabular model's route; waits until
    the drift monitor has taken them in. Random: files are often ordered by time."""
    before = drift_report(url, model)["rows_seen"]
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    sample = frame.sample(min(rows, len(frame)), random_state=seed)
    records = json.loads(sample.to_json(orient="records"))  # NaN -> null; extra columns are ignored
    for start in range(0, len(records), 100):
        response = requests.post(f"{url}/{model}", json={"records": records[start:start + 100]}, timeout=60)
        response.raise_for_status()
    deadline = time.monotonic() + 10
    while drift_report(url, model)["rows_seen"] < before + len(records) and time.monotonic() < deadline:
        time.sleep(0.05)


def drift_report(url: str, model: str) -> dict[str, Any]:
    response = requests.get(f"{url}/models/{model}/drift", timeout=10)
    response.raise_for_status()
    return response.json()


def chosen_columns(report: dict[str, Any]) -> list[dict[str, Any]]:
    columns = [*report["features"], report["prediction"]]
    flagged = [c for c in columns if c["drifted"]]
    if flagged:
        return sorted(flagged, key=lambda c: -c["statistic"])[:MAX_PANELS]
    return sorted(columns, key=lambda c: -(c["statistic"] or 0))[:MAX_PANELS]


def plot(report: dict[str, Any], out: Path) -> list[str]:
    """Draw the chosen columns' bins into a PNG; returns the plotted column names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = chosen_columns(report)
    cols = min(3, len(columns))
    rows = math.ceil(len(columns) / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for axis, column in zip(axes.flat, columns, strict=False):
        bins = column["bins"]
        positions = range(len(bins))
        axis.bar([p - 0.2 for p in positions], [b["reference"] for b in bins], 0.4, label="training")
        axis.bar([p + 0.2 for p in positions], [b["recent"] for b in bins], 0.4, label="recent window")
        axis.set_xticks(list(positions), [b["label"] for b in bins], rotation=60, ha="right", fontsize=7)
        statistic = "n/a" if column["statistic"] is None else f"{column['statistic']:.2f}"
        verdict = "DRIFTED" if column["drifted"] else "ok"
        axis.set_title(f"{column['name']}: PSI {statistic} ({verdict})", fontsize=10)
        axis.set_ylabel("share of rows")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(columns):]:
        axis.set_visible(False)
    figure.suptitle(f"{report['model']}: last {report['window']} rows vs the training split "
                    f"(drifted: PSI > {columns[0]['threshold']})")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return [c["name"] for c in columns]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--out", type=Path, default=Path("drift.png"))
    parser.add_argument("--replay", type=Path, help="CSV/Parquet rows to send to the model's route first")
    parser.add_argument("--rows", type=int, default=1000, help="rows to replay (drawn at random)")
    args = parser.parse_args(argv)
    if args.replay:
        replay(args.url, args.model, args.replay, args.rows)
    plotted = plot(drift_report(args.url, args.model), args.out)
    print(f"{args.out}: {', '.join(plotted)}")


if __name__ == "__main__":
    main()
