"""Peak memory of the worker under the worst legal load: many 16 MiB bodies at once.

    BENTOML_HOME=/tmp/bh_full .venv/bin/python -m loadtests.memory --concurrency 16,32 --out docs/memory.md

Starts `bentoml serve`, then for each form (a multipart upload of one picture, the same
picture as base64 JSON) and each concurrency sends that many bodies just under
MAX_BODY_BYTES at once, a few bursts in a row, and reads the worker's peak resident memory
(VmHWM, the kernel's high-water mark, so no sample is missed) and its resident memory
after the burst. Answers are counted by status: 200, or 503 for bodies over the
MAX_BYTES_IN_FLIGHT budget (with Retry-After), never anything else. The Deployment's memory
limit is derived from the worst peak (k8s/deployment.yaml).
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from loadtests.server import PROJECT, Server, descendants

MAX_BODY_BYTES = 16 * 1024 * 1024


def picture(form: str) -> bytes:
    """A noise PNG whose request body is just under MAX_BODY_BYTES in `form` (noise does not
    compress: the file is as large as its pixels)."""
    side = 2300 if form == "upload" else 1990  # base64 adds a third
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def worker_pid(server: Server) -> int:
    """The worker: the serving process with the largest memory (the arbiter is smaller)."""
    pids = [server.pid, *descendants(server.pid)]
    return max(pids, key=lambda pid: status_kb(pid, "VmRSS"))


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def burst(url: str, form: str, body: bytes, concurrency: int) -> collections.Counter:
    statuses: collections.Counter = collections.Counter()
    lock = threading.Lock()
    start = threading.Barrier(concurrency)

    def send() -> None:
        start.wait()
        if form == "upload":
            response = requests.post(f"{url}/malaria", files=[("images", ("cell.png", body, "image/png"))],
                                     timeout=120)
        else:
            response = requests.post(f"{url}/malaria/base64", data=body,
                                     headers={"Content-Type": "application/json"}, timeout=120)
        with lock:
            statuses[response.status_code] += 1

    threads = [threading.Thread(target=send) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="16,32")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--project", type=Path, default=PROJECT, help="the checkout to serve (A/B)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    bodies = {"upload": picture("upload")}
    bodies["base64"] = json.dumps({"images": [base64.b64encode(picture("base64")).decode()]}).encode()
    for form, body in bodies.items():
        print(f"{form}: {len(body) / 2**20:.1f} MiB per request", file=sys.stderr)
    server = Server(project=args.project)
    rows = []
    try:
        server.wait("/readyz")
        pid = worker_pid(server)
        resting = status_kb(pid, "VmRSS") / 1024
        print(f"worker {pid} resting at {resting:.0f} MB", file=sys.stderr)
        for form, body in bodies.items():
            for concurrency in levels:
                reset_peak(pid)
                statuses: collections.Counter = collections.Counter()
                started = time.monotonic()
                for _ in range(args.bursts):
                    statuses += burst(server.url, form, body, concurrency)
                seconds = time.monotonic() - started
                time.sleep(1)
                row = {"form": form, "concurrency": concurrency, "bursts": args.bursts,
                       "peak_mb": status_kb(pid, "VmHWM") / 1024, "after_mb": status_kb(pid, "VmRSS") / 1024,
                       "statuses": dict(sorted(statuses.items())), "seconds": round(seconds, 1)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    finally:
        server.stop()
    lines = [f"Worker resting at {resting:.0f} MB after start-up.", "",
             "| body | concurrency | peak RSS MB | RSS after MB | answers | seconds |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['form']} | {r['concurrency']} x {r['bursts']} | {r['peak_mb']:.0f} | {r['after_mb']:.0f} | "
              f"{r['statuses']} | {r['seconds']} |" for r in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
