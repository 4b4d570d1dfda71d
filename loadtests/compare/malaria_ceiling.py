"""Malaria at c=32: adaptive batching against no batching and against the service's ceiling.

The issue's target: batching gives 3x the unbatched throughput, or 80% of the ceiling set
by the service's own per-request cost, whichever is lower. The ceiling is measured with
the same service, route, payload, image decoding, batcher and response, but a trivial
malaria model (global max pool + a 2-unit softmax layer, ~0 compute) saved in a temporary
copy of the store with the metadata of the malaria version served (the champion, or
MALARIA_MODEL_VERSION); the other three models are the stored ones. A second, lower-cost
reference: the same body refused after parsing (400), which skips decoding, batching
and the prediction response.

    BENTOML_HOME=/tmp/bh_full .venv/bin/python loadtests/compare/malaria_ceiling.py --out docs/malaria_ceiling.md

Needs wrk (loadtests/compare/README.md). One 50x50 PNG of the data per request, base64 JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT))

from loadtests.compare.bench import ENDPOINTS, request_bodies, wrk  # noqa: E402
from loadtests.server import local_server  # noqa: E402
from service.versions import CHAMPION, ROLE_LABEL, served_tag  # noqa: E402

ROUTE = ENDPOINTS["malaria"].route


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", PROJECT / "data")))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the variants (the table shows each run)")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    return parser.parse_args()


def measure(url: str, body: Path, connections: int, seconds: int) -> dict:
    """3 s of warm-up at concurrency 8, then the measured run (with req/s as "rps")."""
    wrk(url, body, 8, 3)
    result = wrk(url, body, connections, seconds)
    result["rps"] = result["requests"] / result["duration_us"] * 1e6
    return result


def trivial_store(source: Path, target: Path) -> str:
    """A store with the stored digits, iris and kobe and a trivial malaria model, the
    champion there, with the metadata of the malaria version `source` serves; its tag."""
    for name in ("digits", "iris", "kobe"):
        (target / "models").mkdir(parents=True, exist_ok=True)
        os.symlink(source / "models" / name, target / "models" / name)
    malaria = source / "models" / "malaria"
    version = served_tag("malaria").split(":", 1)[1]  # BENTOML_HOME is `source`
    metadata = yaml.safe_load((malaria / version / "model.yaml").read_text())["metadata"]
    program = """
import json, sys
import keras, numpy as np
from training.datasets import Dataset
from training.trainers import MalariaTrainer
trainer = MalariaTrainer()
image = trainer.spec.image
model = keras.Sequential([keras.Input((image.height, image.width, image.channels)),
                          keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(2, activation="softmax")])
cells = np.random.default_rng(0).random((64, image.height, image.width, image.channels), dtype=np.float32)
export = trainer.export(model, Dataset(cells, np.zeros(64, dtype=int)))  # LiteRT, as for the real CNN
assert not export.failures, export.failures
metadata = json.loads(sys.argv[1]) | export.metadata
metadata["trivial"] = True
labels = {"purpose": "ceiling-benchmark", sys.argv[2]: sys.argv[3]}
print(trainer.save_to_bentoml(model, "malaria", labels, metadata, export).tag)
"""
    saved = subprocess.run([sys.executable, "-c", program, json.dumps(metadata), ROLE_LABEL, CHAMPION],
                           check=True, cwd=PROJECT, env={**os.environ, "BENTOML_HOME": str(target)},
                           stdout=subprocess.PIPE, text=True)
    return saved.stdout.strip().splitlines()[-1]


def main() -> int:
    args = parse_args()
    source = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    work = Path(tempfile.mkdtemp(prefix="malaria-ceiling-"))
    body = request_bodies("malaria", args.data_dir, work)["typed"]
    png_bytes = len(base64.b64decode(json.loads(body.read_text())["images"][0]))
    refused = work / "refused.json"
    refused.write_text(json.dumps({"images": ["not base64 at all!" * 150]}))
    trivial = trivial_store(source, work / "trivial-store")

    variants = [  # (label, BENTOML_HOME, env, body)
        ("adaptive batching", source, {}, body),
        ("no batching (ADAPTIVE_BATCHING=off)", source, {"ADAPTIVE_BATCHING": "off"}, body),
        ("ceiling: trivial model, adaptive batching", work / "trivial-store",
         {"MALARIA_MODEL_VERSION": trivial.split(":", 1)[1]}, body),
        ("reference: refused after parsing (400)", source, {}, refused),
    ]
    results: dict[str, list[dict]] = {}
    try:
        for _ in range(args.repeat):  # rounds over the variants: the machine's drift hits each alike
            for label, home, env, payload in variants:
                with local_server({"BENTOML_HOME": str(home), **env}) as (url, _pid):
                    result = measure(url + ROUTE, payload, args.connections, args.seconds)
                results.setdefault(label, []).append(result)
                print(f"{label}: {result['rps']:.0f} req/s, p99 {result['p99_us'] / 1000:.1f} ms, "
                      f"non-2xx {result['non2xx']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def mean_rps(label: str) -> float:
        return sum(r["rps"] for r in results[label]) / len(results[label])

    batched, unbatched = mean_rps(variants[0][0]), mean_rps(variants[1][0])
    ceiling = mean_rps(variants[2][0])
    target = min(3 * unbatched, 0.8 * ceiling)
    lines = [
        f"Malaria `{ROUTE}`, one {png_bytes}-byte PNG per request, wrk -t2 -c{args.connections} "
        f"-d{args.seconds}s, {args.repeat} rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:",
        "",
        "| variant | req/s (each run) | p50 / p99 (ms, each run) | non-2xx |",
        "|---|---|---|---|",
    ]
    for label, runs in results.items():
        rates = ", ".join(f"{r['rps']:,.0f}" for r in runs)
        latencies = ", ".join(f"{r['p50_us'] / 1000:.0f} / {r['p99_us'] / 1000:.0f}" for r in runs)
        lines.append(f"| {label} | {rates} | {latencies} | {sum(r['non2xx'] for r in runs)} |")
    lines += ["", f"Batching: {batched / unbatched:.2f}x unbatched, {batched / ceiling:.0%} of the ceiling. "
              f"Target min(3 x {unbatched:,.0f}, 0.8 x {ceiling:,.0f}) = {target:,.0f} req/s: "
              f"{'met' if batched >= target else 'NOT met'} ({batched:,.0f})."]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
