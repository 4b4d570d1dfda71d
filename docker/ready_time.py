"""Seconds from `docker run` to /readyz 200, over several runs of one image.

    export DOCKER_HOST=$(docker/engine.sh | sed -n 1p)
    .venv/bin/python docker/ready_time.py "$IMAGE" --runs 5   # IMAGE: the tag docker/containerize.sh printed

Each run starts the image as the Deployment would (host network here, the image's own
entrypoint), polls /livez and /readyz every 20 ms, records both times and the resident
memory of the container's processes once ready, then removes the container.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import time
from pathlib import Path

import requests

DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_run(image: str) -> dict[str, float]:
    port = free_port()
    name = f"ready-time-{port}"
    started = time.monotonic()
    subprocess.run([DOCKER, "run", "-d", "--rm", "--name", name, "--network", "host", "-e", f"PORT={port}", image],
                   check=True, capture_output=True)
    figures: dict[str, float] = {"create_s": time.monotonic() - started}
    try:
        while "ready_s" not in figures:
            if time.monotonic() - started > 120:
                raise TimeoutError("not ready after 120 s")
            for path, key in (("/livez", "live_s"), ("/readyz", "ready_s")):
                if key in figures:
                    continue
                try:
                    if requests.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                        figures[key] = time.monotonic() - started
                except requests.RequestException:
                    pass
            time.sleep(0.02)
        pids = subprocess.run([DOCKER, "top", name, "-eo", "pid"], capture_output=True, text=True).stdout.split()[1:]
        rss_kb = sum(int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                              if line.startswith("VmRSS:"))) for pid in pids)
        figures["rss_ready_mb"] = rss_kb / 1024
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    driver = subprocess.run([DOCKER, "info", "-f", "{{.Driver}}"], capture_output=True, text=True).stdout.strip()
    runs = [one_run(args.image) for _ in range(args.runs)]
    print(f"{args.image}, storage driver {driver}, {args.runs} runs")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"{key}: median {statistics.median(values):.2f}, min {min(values):.2f}, max {max(values):.2f}")


if __name__ == "__main__":
    main()
