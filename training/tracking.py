"""MLflow set-up: an embedded SQLite store by default, MLFLOW_TRACKING_URI when given."""

from __future__ import annotations

import subprocess
from pathlib import Path

from training.settings import Settings

EXPERIMENT = "model-serving"


def configure(settings: Settings) -> str:
    """Point MLflow at the store and return the experiment id (created on first use)."""
    import mlflow

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    # With a SQLite store MLflow would put artifacts under the working directory.
    location = (settings.mlflow_artifact_root.as_uri()
                if settings.mlflow_tracking_uri.startswith("sqlite:") else None)
    return mlflow.create_experiment(EXPERIMENT, artifact_location=location)


def code_version() -> str:
    """The git commit of the training code (with '-dirty' for local changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")
