"""One model call, scikit-learn's pickle against the arrays the service runs, per batch size.

    BENTOML_HOME=/tmp/bh_full DATA_DIR=../shared/data .venv/bin/python -m loadtests.model_calls \
        --out docs/model_calls.md

The inputs are real rows (scikit-learn's digits and iris, kobe's dev Parquet, in the
form each model takes: kobe's model matrix), one thread, scikit-learn with its per-call
checks off as the service used to run it. Rounds alternate between the two, and each
figure is the median over rounds of the mean time of a call, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,32,64,1000", help="batch sizes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="per round, batch size and runtime")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    return parser.parse_args()


def inputs(name: str, rows: int) -> np.ndarray:
    import pandas as pd
    from sklearn.datasets import load_digits, load_iris

    from service.preprocessing import kobe_model_matrix, typed_frame
    from service.specs import KOBE

    if name == "kobe":
        data_dir = Path(os.environ.get("DATA_DIR", "data"))
        frame = typed_frame(pd.read_parquet(data_dir / "kobe" / "dataset_kobe_dev.parquet"), KOBE)
        matrix = kobe_model_matrix(frame)
    else:
        matrix = (load_digits() if name == "digits" else load_iris()).data
    return np.resize(matrix, (rows, matrix.shape[1]))  # repeats rows past the end


def runtimes(name: str) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import bentoml
    import sklearn

    from service import arrays
    from service.specs import ARRAYS_MODEL_FILE
    from service.versions import served_tag

    stored = bentoml.models.get(served_tag(name))
    model = bentoml.sklearn.load_model(stored)
    if name == "kobe":
        model = model[-1]  # the trees, after the matrix step
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    served = arrays.predictor(*arrays.read(Path(stored.path_of(ARRAYS_MODEL_FILE)).read_bytes()))
    return {"scikit-learn": model.predict_proba, "arrays": served}


def mean_call_us(call: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, seconds: float) -> float:
    call(batch)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        call(batch)
        calls += 1
    return elapsed / calls * 1e6


def main() -> None:
    from threadpoolctl import threadpool_limits

    args = parse_args()
    threadpool_limits(limits=1)
    sizes = [int(size) for size in args.rows.split(",")]
    lines = ["| model | rows | scikit-learn us | arrays us | speed-up |", "|---|---|---|---|---|"]
    for name in ("iris", "digits", "kobe"):
        called = runtimes(name)
        for rows in sizes:
            batch = inputs(name, rows)
            expected = called["scikit-learn"](batch)
            assert np.allclose(called["arrays"](batch), expected, rtol=0, atol=1e-9)
            times: dict[str, list[float]] = {label: [] for label in called}
            for _ in range(args.rounds):
                for label, call in called.items():
                    times[label].append(mean_call_us(call, batch, args.seconds))
            sk, ours = (statistics.median(times[label]) for label in ("scikit-learn", "arrays"))
            lines.append(f"| {name} | {rows} | {sk:,.0f} | {ours:,.0f} | {sk / ours:.2f}x |")
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
