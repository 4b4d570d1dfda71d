"""Where training reads data and writes its tracking store, from the environment.

Read once by the command line and passed down explicitly; nothing here runs at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SEED = 42


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    """Root of the data layout: kobe/*.parquet, malaria/cell_images/<class>/*."""
    state_dir: Path
    """Local state (MLflow's embedded store) when no tracking server is configured."""
    mlflow_tracking_uri: str
    """MLflow tracking URI; defaults to a SQLite store under state_dir."""
    seed: int = DEFAULT_SEED

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.state_dir / "mlartifacts"

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None, seed: int = DEFAULT_SEED) -> Settings:
        """DATA_DIR, STATE_DIR and MLFLOW_TRACKING_URI, with project-local defaults."""
        data = Path(data_dir or os.environ.get("DATA_DIR") or "data").expanduser().resolve()
        state = Path(os.environ.get("STATE_DIR") or ".state").expanduser().resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state / 'mlflow.db'}"
        return cls(data_dir=data, state_dir=state, mlflow_tracking_uri=uri, seed=seed)
