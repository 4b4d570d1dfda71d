"""A/B of one route between two checkouts of this project, in interleaved rounds.

    git worktree add /tmp/before <commit>
    BENTOML_HOME=/tmp/bh_full DATA_DIR=../shared/data .venv/bin/python loadtests/compare/ab.py \\
        --a /tmp/before --b . --model malaria --concurrency 1,32 --rounds 3 --out docs/ab.md

Each checkout's `bentoml serve` runs with the same venv and store, from its own folder, so
the only difference is the code (or, with `--a . --b .`, the environment: `--b-env
MALARIA_SHADOW_VERSION=challenger` measures the shadow's cost; the report then adds the
shadow's own counts; `--b-env API_KEYS_FILE=keys.txt` with WRK_AUTHORIZATION="Bearer KEY"
in the environment measures API keys, the header sent to both). Within a round every (checkout, concurrency) pair runs
once, A and B alternating, so the machine's drift hits both alike; the report gives each
round's B/A ratio and how busy the machine was outside the servers and wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from bench import (  # noqa: E402
    children_cpu_seconds,
    http,
    machine_busy_seconds,
    request_bodies,
    tree_cpu_seconds,
    wrk,
)

from loadtests.server import Server, tree_rss_mb  # noqa: E402

ROUTES = {"iris": "/iris", "digits": "/digits/pixels", "kobe": "/kobe", "malaria": "/malaria/base64"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="the checkout before")
    parser.add_argument("--b", type=Path, required=True, help="the checkout after")
    parser.add_argument("--a-home", type=Path, help="BENTOML_HOME for A (default: the environment's)")
    parser.add_argument("--b-home", type=Path, help="BENTOML_HOME for B (default: the environment's)")
    parser.add_argument("--a-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for A only (repeatable), e.g. DRIFT_WINDOW=0")
    parser.add_argument("--b-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model", choices=sorted(ROUTES), default="malaria")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per measurement")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "data")),
                        help="the data folder (default: $DATA_DIR, else ./data)")
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


def checkout_server(folder: Path, work: Path, home: Path | None, env: list[str]) -> Server:
    """`bentoml serve` of a checkout, with its own environment on top of this one's."""
    environment = dict(item.split("=", 1) for item in env)
    if home:
        environment["BENTOML_HOME"] = str(home)
    return Server(env=environment, log=work / "serve.log", own_home=work / "home", project=folder.resolve())


def shadow_report(url: str, model: str) -> dict | None:
    """The server's shadow report for the model, or None when it shadows nothing."""
    status, body = http("GET", f"{url}/models/{model}/shadow")
    return json.loads(body) if status == 200 else None


def main() -> int:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ab-"))
    body = request_bodies(args.model, args.data_dir, work)["typed"]
    servers = {}
    for key, folder, home, env in (("A", args.a, args.a_home, args.a_env), ("B", args.b, args.b_home, args.b_env)):
        (work / key).mkdir()
        servers[key] = checkout_server(folder, work / key, home, env)
    rows = []
    try:
        for server in servers.values():
            server.wait("/readyz", timeout=120)
            wrk(server.url + ROUTES[args.model], body, 8, 3)  # warm-up
        for number in range(1, args.rounds + 1):
            for level in levels:
                for key in ("A", "B") if number % 2 else ("B", "A"):
                    server = servers[key]
                    cpu0, busy0, wrk0 = tree_cpu_seconds(server.pid), machine_busy_seconds(), children_cpu_seconds()
                    result = wrk(server.url + ROUTES[args.model], body, level, args.duration)
                    seconds = result["duration_us"] / 1e6
                    server_cpu = tree_cpu_seconds(server.pid) - cpu0
                    other = machine_busy_seconds() - busy0 - server_cpu - (children_cpu_seconds() - wrk0)
                    rows.append({"round": number, "c": level, "key": key,
                                 "rps": result["requests"] / seconds,
                                 "p50_ms": result["p50_us"] / 1e3,
                                 "p99_ms": result["p99_us"] / 1e3,
                                 "cpu_ms": 1e3 * server_cpu / max(result["requests"], 1),
                                 "other_cores": max(other, 0.0) / seconds,
                                 "errors": result["non2xx"] + result["connect"] + result["read"]
                                 + result["write"] + result["timeout"]})
                    print(f"round {number} c={level} {key}: {rows[-1]['rps']:.0f} req/s", file=sys.stderr)
        after = {key: (tree_rss_mb(server.pid), shadow_report(server.url, args.model))
                 for key, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    report = render(args, levels, rows) + "\n" + "\n".join(
        f"{key}: {rss:.0f} MB resident after the runs" + (
            f"; shadow {shadow['challenger']}: {shadow['requests_compared']:,} requests compared, "
            f"{shadow['shed']:,} shed, {shadow['errors']} errors, label agreement {shadow['label_agreement']}"
            if shadow else "")
        for key, (rss, shadow) in after.items()) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


def render(args: argparse.Namespace, levels: list[int], rows: list[dict]) -> str:
    lines = [f"{args.model} `{ROUTES[args.model]}`, A = {args.a} {' '.join(args.a_env)}, "
             f"B = {args.b} {' '.join(args.b_env)}, wrk {args.duration} s per run, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| c | round | A req/s | B req/s | B/A | A p50 ms | B p50 ms | A p99 ms | B p99 ms | A CPU ms/req "
             "| B CPU ms/req | other load (cores) | errors A/B |", "|---" * 13 + "|"]
    for level in levels:
        ratios = []
        for number in range(1, args.rounds + 1):
            a, b = (next(r for r in rows if (r["round"], r["c"], r["key"]) == (number, level, key)) for key in "AB")
            ratios.append(b["rps"] / a["rps"])
            lines.append(f"| {level} | {number} | {a['rps']:,.0f} | {b['rps']:,.0f} | {ratios[-1]:.2f} "
                         f"| {a['p50_ms']:.2f} | {b['p50_ms']:.2f} "
                         f"| {a['p99_ms']:.1f} | {b['p99_ms']:.1f} | {a['cpu_ms']:.2f} | {b['cpu_ms']:.2f} "
                         f"| {max(a['other_cores'], b['other_cores']):.2f} | {a['errors']}/{b['errors']} |")
        lines.append(f"| {level} | median | | | **{statistics.median(ratios):.2f}** | | | | | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
