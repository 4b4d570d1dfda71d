"""Soak: one client, steady load for a long time; memory, GC pauses and latency over time.

    .venv/bin/python loadtests/soak.py --minutes 10 --out docs/soak

Starts a server (or uses --host with --pid), sends single-record /iris calls over one
keep-alive connection (concurrency 1) for --minutes, and every --every seconds records
the server's RSS (whole process tree), its full-GC pauses (from /metrics) and the
latency percentiles of the interval. Writes OUT.csv and OUT.png; prints a verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.server import local_server, tree_rss_mb  # noqa: E402

BODY = json.dumps({"records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]})


def gc_pauses(url: str) -> tuple[float, float]:
    """(count, total seconds) of generation-2 collections so far."""
    text = urlopen_text(url + "/metrics")
    count = sum(float(v) for v in re.findall(r'^python_gc_pause_seconds_count\{generation="2"\} (\S+)$', text, re.M))
    total = sum(float(v) for v in re.findall(r'^python_gc_pause_seconds_sum\{generation="2"\} (\S+)$', text, re.M))
    return count, total


def urlopen_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def soak(url: str, pid: int, minutes: float, every: float) -> list[dict]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "application/json"}
    samples = []
    started = time.monotonic()
    end = started + minutes * 60
    while time.monotonic() < end:
        latencies, errors = [], 0
        interval_end = min(time.monotonic() + every, end)
        gc_count, gc_total = gc_pauses(url)
        while time.monotonic() < interval_end:
            sent = time.perf_counter()
            connection.request("POST", "/iris", BODY, headers)
            response = connection.getresponse()
            response.read()
            latencies.append((time.perf_counter() - sent) * 1000)
            errors += response.status != 200
        gc_count_after, gc_total_after = gc_pauses(url)
        full_gcs = gc_count_after - gc_count
        sample = {
            "minute": round((time.monotonic() - started) / 60, 2), "requests": len(latencies), "errors": errors,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "max_ms": max(latencies), "rss_mb": tree_rss_mb(pid), "full_gcs": full_gcs,
            "mean_full_gc_ms": (gc_total_after - gc_total) * 1000 / full_gcs if full_gcs else 0.0,
        }
        samples.append(sample)
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in sample.items()), flush=True)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=20, help="seconds per sample")
    parser.add_argument("--host", help="a running server (default: start one)")
    parser.add_argument("--pid", type=int, help="the running server's process id, for its memory")
    parser.add_argument("--out", type=Path, default=Path("loadtests/results/soak"))
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.host:
            url, pid = args.host, args.pid
        else:
            url, pid = stack.enter_context(local_server())
        samples = soak(url, pid, args.minutes, args.every)
    write(samples, args.out)
    return verdict(samples)


def verdict(samples: list[dict]) -> int:
    """Flat memory (last third vs first third after warm-up) and p99 at c=1 under 10 ms."""
    third = max(1, len(samples) // 3)
    early = np.mean([s["rss_mb"] for s in samples[1:third + 1]])
    late = np.mean([s["rss_mb"] for s in samples[-third:]])
    p99 = max(s["p99_ms"] for s in samples[1:]) if len(samples) > 1 else samples[0]["p99_ms"]
    errors = sum(s["errors"] for s in samples)
    print(f"RSS {early:.0f} MB -> {late:.0f} MB ({late - early:+.1f} MB); worst interval p99 {p99:.1f} ms; "
          f"{errors} errors; {sum(s['requests'] for s in samples)} requests")
    return 0 if late - early < 10 and p99 < 10 and errors == 0 else 1


def write(samples: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["minute"] for s in samples]
    fig, (memory, latency) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    memory.plot(minutes, [s["rss_mb"] for s in samples], "-o")
    memory.set_ylabel("server RSS (MB)")
    rss = [s["rss_mb"] for s in samples]
    memory.set_ylim(0.9 * min(rss), 1.1 * max(rss))  # show growth at its true scale
    memory.set_title("soak: /iris, one connection")
    latency.plot(minutes, [s["p50_ms"] for s in samples], "-o", label="p50")
    latency.plot(minutes, [s["p99_ms"] for s in samples], "-s", label="p99")
    latency.plot(minutes, [s["mean_full_gc_ms"] for s in samples], ":^", label="mean full-GC pause")
    latency.set_ylabel("ms")
    latency.set_xlabel("minutes")
    latency.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    sys.exit(main())
