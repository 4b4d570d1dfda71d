"""Concurrency sweep per endpoint, adaptive batching on and off: numbers and a plot.

    .venv/bin/python loadtests/sweep.py --out docs/loadtest_sweep

For each batching mode a fresh server is started; for each endpoint and concurrency, a
closed-loop locust run (each user sends its next request as soon as it has an answer,
so users = requests in flight). Writes OUT.csv, OUT.md and OUT.png (throughput against
p99 latency, one curve per endpoint and mode).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.server import PROJECT, local_server, tree_cpu_seconds  # noqa: E402

ENDPOINT_USERS = {"iris": "IrisOnly", "kobe": "KobeOnly", "digits": "DigitsOnly", "malaria": "MalariaOnly",
                  "iris-v2": "IrisV2Only"}


def run_locust(url: str, user_class: str, users: int, seconds: int, folder: Path) -> dict[str, float]:
    prefix = folder / f"{user_class}-{users}"
    locust = Path(sys.executable).with_name("locust")
    started = time.perf_counter()
    cpu_before = os.times()
    subprocess.run([str(locust), "-f", "loadtests/sweep_users.py", user_class, "--headless", "--host", url,
                    "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds}s",
                    "--csv", str(prefix), "--only-summary", "--stop-timeout", "5"],
                   cwd=PROJECT, capture_output=True, text=True, timeout=seconds + 120)
    cpu_after = os.times()
    with open(f"{prefix}_stats.csv") as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    return {
        "requests": float(total["Request Count"]), "failures": float(total["Failure Count"]),
        "rps": float(total["Requests/s"]), "p50_ms": float(total["50%"]), "p99_ms": float(total["99%"]),
        "locust_cpu_s": (cpu_after.children_user + cpu_after.children_system
                         - cpu_before.children_user - cpu_before.children_system),
        "wall_s": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", default="iris,kobe,digits,malaria,iris-v2")
    parser.add_argument("--users", default="1,8,32,128")
    parser.add_argument("--duration", type=int, default=20, help="seconds per point")
    parser.add_argument("--modes", default="on,off", help="adaptive batching modes")
    parser.add_argument("--out", type=Path, default=Path("docs/loadtest_sweep"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            with local_server({"ADAPTIVE_BATCHING": mode}) as (url, pid):
                for endpoint in args.endpoints.split(","):
                    run_locust(url, ENDPOINT_USERS[endpoint], 4, 5, Path(tmp))  # warm up
                    for users in map(int, args.users.split(",")):
                        cpu = tree_cpu_seconds(pid)
                        result = run_locust(url, ENDPOINT_USERS[endpoint], users, args.duration, Path(tmp))
                        result["server_cpu_ms_per_request"] = (
                            (tree_cpu_seconds(pid) - cpu) * 1000 / max(result["requests"], 1))
                        rows.append({"endpoint": endpoint, "batching": mode, "users": users, **result})
                        print(f"{endpoint:8} batching={mode:3} c={users:<4} {result['rps']:8.1f} req/s  "
                              f"p50 {result['p50_ms']:6.0f} ms  p99 {result['p99_ms']:6.0f} ms  "
                              f"failures {result['failures']:.0f}", flush=True)
    write(rows, args.out, " ".join(sys.argv))
    return 0


def write(rows: list[dict], out: Path, command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Command: `{command}`", "", "| endpoint | batching | users | req/s | p50 ms | p99 ms | failures "
             "| server CPU ms/req | locust CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['endpoint']} | {r['batching']} | {r['users']} | {r['rps']:.0f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['failures']:.0f} | {r['server_cpu_ms_per_request']:.2f} | "
              f"{r['locust_cpu_s']:.0f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = sorted({r["endpoint"] for r in rows})
    fig, axes = plt.subplots(1, len(endpoints), figsize=(4 * len(endpoints), 4), squeeze=False)
    for ax, endpoint in zip(axes[0], endpoints, strict=True):
        for mode, style in (("on", "-o"), ("off", "--s")):
            points = [r for r in rows if r["endpoint"] == endpoint and r["batching"] == mode]
            if points:
                ax.plot([p["rps"] for p in points], [p["p99_ms"] for p in points], style, label=f"batching {mode}")
                for p in points:
                    ax.annotate(f"c={p['users']}", (p["rps"], p["p99_ms"]), fontsize=7)
        ax.set_title(endpoint)
        ax.set_xlabel("requests/s")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_yscale("log")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    sys.exit(main())
