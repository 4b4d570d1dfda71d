"""CPU per image of malaria CNN versions as the service runs them: their LiteRT files, one thread.

    BENTOML_HOME=/tmp/fulltrain/bentoml DATA_DIR=../shared/data .venv/bin/python -m loadtests.cnn_cost \
        malaria:OLD malaria:NEW

The inputs are real cells (a seeded sample of both classes, decoded as the service does).
Rounds alternate between the versions, so the drift of a shared machine hits each alike;
each figure is the median over rounds of the mean time of a call, divided by its images.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from loadtests.model_calls import mean_call_us


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tags", nargs="+", help="BentoML tags of malaria versions")
    parser.add_argument("--batches", default="1,16,32", help="images per call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="per round, batch size and version")
    return parser.parse_args()


def main() -> None:
    import bentoml

    from service.litert import LiteRTModel
    from service.specs import LITERT_MODEL_FILE
    from training.datasets import load_malaria

    args = parse_args()
    sizes = [int(size) for size in args.batches.split(",")]
    images = load_malaria(Path(os.environ.get("DATA_DIR", "data")), per_class=max(sizes)).features
    models = {tag: LiteRTModel(Path(bentoml.models.get(tag).path_of(LITERT_MODEL_FILE)).read_bytes(), threads=1)
              for tag in args.tags}
    timings: dict[tuple[str, int], list[float]] = {(tag, size): [] for tag in models for size in sizes}
    for round_ in range(1, args.rounds + 1):
        for size in sizes:
            for tag, model in models.items():
                timings[tag, size].append(mean_call_us(model, images[:size], args.seconds) / size)
        print(f"round {round_}/{args.rounds} done", flush=True)
    print("\n| version | " + " | ".join(f"{size} a call" for size in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for tag in models:
        cells_ = " | ".join(f"{statistics.median(timings[tag, size]):.0f} us" for size in sizes)
        print(f"| {tag} | {cells_} |")


if __name__ == "__main__":
    main()
