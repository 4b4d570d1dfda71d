"""Send real cells to a shadowed server and print its shadow report: how the challenger
would have answered them, next to the champion that did.

    MALARIA_SHADOW_VERSION=challenger .venv/bin/bentoml serve &
    .venv/bin/python -m loadtests.shadow_replay --cells 2000 --url http://127.0.0.1:3000

Cells are drawn at random (seeded) from both classes under $DATA_DIR/malaria/cell_images,
sent one at a time in multipart calls of --per-call images, so the champion is never
busy and nothing is shed. Prints the report as JSON, plus the champion's accuracy on
these cells (the true label is the file's folder; the challenger's answers never reach a
client, so its accuracy follows from the agreement only).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import requests

CLASSES = ("Parasitized", "Uninfected")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--cells", type=int, default=2000, help="cells to send (default 2000)")
    parser.add_argument("--per-call", type=int, default=16, help="images per request (default 16)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "data")))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.data_dir / "malaria" / "cell_images"
    files = [(path, label) for label in CLASSES for path in sorted((root / label).glob("*.png"))]
    if not files:
        print(f"no cells under {root}: set DATA_DIR or --data-dir", file=sys.stderr)
        return 2
    chosen = random.Random(args.seed).sample(files, min(args.cells, len(files)))
    right = 0
    for start in range(0, len(chosen), args.per_call):
        part = chosen[start:start + args.per_call]
        answer = requests.post(f"{args.url}/malaria", timeout=60,
                               files=[("images", (p.name, p.read_bytes(), "image/png")) for p, _ in part])
        answer.raise_for_status()
        right += sum(p["label"] == label for p, (_, label) in zip(answer.json()["predictions"], part, strict=True))
        if (start // args.per_call) % 25 == 0:
            print(f"  sent {start + len(part)}/{len(chosen)} cells", file=sys.stderr)
    time.sleep(1)  # the last batches reach the shadow after their answers
    report = requests.get(f"{args.url}/models/malaria/shadow", timeout=10)
    report.raise_for_status()
    print(json.dumps({"champion_accuracy_on_these_cells": right / len(chosen), **report.json()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
