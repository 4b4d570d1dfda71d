"""Start a local `bentoml serve` (load tests, benchmarks and the test suite) and read its CPU and memory."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

PROJECT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`bentoml serve` of the project on 127.0.0.1 (a free port unless given); stop() ends it.

    own_home: run with this BENTOML_HOME, whose models/ links to the store in the
    environment's (each test server's files apart from the others').
    """

    def __init__(self, env: dict[str, str] | None = None, log: Path | None = None,
                 own_home: Path | None = None, project: Path = PROJECT, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environment = {**os.environ, **(env or {})}
        if own_home is not None:
            store = Path(environment.get("BENTOML_HOME", Path.home() / "bentoml")) / "models"
            own_home.mkdir(parents=True, exist_ok=True)
            (own_home / "models").symlink_to(store)
            environment["BENTOML_HOME"] = str(own_home)
        bentoml = Path(sys.executable).with_name("bentoml")
        self.process = subprocess.Popen(
            [str(bentoml), "serve", "--host", "127.0.0.1", "--port", str(self.port)], cwd=project, env=environment,
            stdout=log.open("w") if log else subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    def wait(self, path: str = "/readyz", timeout: float = 300.0) -> None:
        """Until GET path answers 200; fails with the log's tail if the server exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self._log_tail()}")
            with contextlib.suppress(requests.RequestException):  # not listening yet, or busy starting
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{path} not 200 after {timeout} s:\n{self._log_tail()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def _log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log and self.log.exists() else "(no log kept)"


@contextlib.contextmanager
def local_server(env: dict[str, str] | None = None, log: Path | None = None,
                 timeout: float = 300) -> Iterator[tuple[str, int]]:
    """(url, pid) of a ready server started from the project; stopped on exit."""
    server = Server(env, log)
    try:
        server.wait("/readyz", timeout)
        yield server.url, server.pid
    finally:
        server.stop()


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total = 0
    for child in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def tree_cpu_seconds(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for child in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def descendants(pid: int) -> list[int]:
    children = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children += [int(c) for c in (task / "children").read_text().split()]
    return children + [g for c in children for g in descendants(c)]
