"""A real `bentoml serve` process, started and stopped by tests (loadtests/server.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from loadtests import server
from loadtests.server import free_port

__all__ = ["Server", "free_port"]


class Server(server.Server):
    """Its log and its own BENTOML_HOME (on the session's model store) under STATE_DIR."""

    def __init__(self, env: dict[str, str] | None = None, project: Path = server.PROJECT,
                 port: int | None = None) -> None:
        folder = Path(tempfile.mkdtemp(prefix="serve-", dir=os.environ["STATE_DIR"]))
        super().__init__(env, log=folder / "serve.log", own_home=folder / "bentoml-home", project=project, port=port)
