"""A real `bentoml serve` process, started and stopped by tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

PROJECT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(os.environ["STATE_DIR"]) / f"serve-{self.port}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # `bentoml serve` empties BENTOML_HOME/prometheus_multiproc_dir at start, which
        # would wipe another running server's metrics: each server gets its own home,
        # sharing the session's model store.
        home = Path(os.environ["STATE_DIR"]) / f"bentoml-home-{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
        bentoml = Path(sys.executable).with_name("bentoml")
        self.process = subprocess.Popen(
            [str(bentoml), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=PROJECT, env={**os.environ, "BENTOML_HOME": str(home), **(env or {})},
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )

    def wait(self, path: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{path} not 200 after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
