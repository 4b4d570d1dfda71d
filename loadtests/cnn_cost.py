"""CPU per image of malaria CNN versions as the service runs them: their LiteRT files, one thread.

    BENTOML_HOME=/tmp/fulltrain/bentoml DATA_DIR=../shared/data .venv/bin/python -m loadtests.cnn_cost \
        malaria:OLD malaria:NEW

The inputs are real cells (the first of each class folder, decoded as the service does).
Rounds alternate between the versions, so the drift of a shared machine hits each alike;
each figure is the median over rounds of the mean time of a call, divided by its images.
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
    parser.add_argument("tags", nargs="+", help="BentoML tags of malaria versions")
    parser.add_argument("--batches", default="1,16,32", help="images per call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="per round, batch size and version")
    return parser.parse_args()


def cells(count: int) -> np.ndarray:
    """`count` real cells, alternating classes, as the service decodes them."""
    from service.preprocessing import encoded_image_to_array
    from service.specs import MALARIA

    assert MALARIA.image is not None
    root = Path(os.environ.get("DATA_DIR", "data")) / "malaria" / "cell_images"
    folders = [sorted(p for p in (root / name).iterdir() if p.suffix == ".png") for name in MALARIA.class_names]
    paths = [folders[i % 2][i // 2] for i in range(count)]
    return np.stack([encoded_image_to_array(path.read_bytes(), MALARIA.image) for path in paths])


def microseconds_per_image(model: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, seconds: float) -> float:
    model(batch)  # the interpreter sizes its tensors on the first call of a shape
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        model(batch)
        calls += 1
    return elapsed / calls / len(batch) * 1e6


def main() -> None:
    import bentoml

    from service.litert import LiteRTModel
    from service.specs import LITERT_MODEL_FILE

    args = parse_args()
    sizes = [int(size) for size in args.batches.split(",")]
    images = cells(max(sizes))
    models = {tag: LiteRTModel(Path(bentoml.models.get(tag).path_of(LITERT_MODEL_FILE)).read_bytes(), threads=1)
              for tag in args.tags}
    timings: dict[tuple[str, int], list[float]] = {(tag, size): [] for tag in models for size in sizes}
    for round_ in range(1, args.rounds + 1):
        for size in sizes:
            for tag, model in models.items():
                timings[tag, size].append(microseconds_per_image(model, images[:size], args.seconds))
        print(f"round {round_}/{args.rounds} done", flush=True)
    print("\n| version | " + " | ".join(f"{size} a call" for size in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for tag in models:
        cells_ = " | ".join(f"{statistics.median(timings[tag, size]):.0f} us" for size in sizes)
        print(f"| {tag} | {cells_} |")


if __name__ == "__main__":
    main()
