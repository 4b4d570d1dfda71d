"""Loading a stored model for serving, and the one function that runs it on a batch."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service import arrays, versions
from service.preprocessing import MODEL_MATRICES, records_columns, records_frame
from service.specs import ARRAYS_MODEL_FILE, LITERT_MODEL_FILE, ModelSpec


def cpu_count(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the container's CPU limit (cgroup v2 or v1), else the
    affinity mask. A fractional limit rounds down, to at least one."""
    available = len(os.sched_getaffinity(0))
    for quota_file, period_file in ((cgroup / "cpu.max", None),  # v2: "quota period"
                                    (cgroup / "cpu" / "cpu.cfs_quota_us", cgroup / "cpu" / "cpu.cfs_period_us")):
        try:
            if period_file is None:
                quota, period = quota_file.read_text().split()
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        except (OSError, ValueError):
            continue
        if quota not in ("max", "-1"):
            return min(available, max(1, int(quota) // int(period)))
        return available
    return available


Framework = Literal["arrays", "litert"]
"""What runs a served model: its arrays (a scikit-learn model's, service/arrays.py), or LiteRT."""

V2_PLATFORMS: dict[Framework, str] = {"arrays": "sklearn", "litert": "tensorflow_lite"}
"""The V2 metadata's `platform` of each framework (the trained model's library)."""


@dataclass
class ServedModel:
    spec: ModelSpec
    tag: str
    metadata: dict[str, Any]
    predict_proba: Callable[[Any], np.ndarray]
    """Rows in model form (DataFrame or array) -> probabilities (n, classes)."""
    framework: Framework
    matrix: Callable[[Any], np.ndarray] | None = None
    """Columns -> the model's matrix, where the trained pipeline starts with this step
    (preprocessing.MODEL_MATRICES) and predict_proba runs the rest of it."""
    role: str | None = None
    """champion or challenger, from the stored model's labels (service/versions.py)."""

    @property
    def version(self) -> str:
        return self.tag.split(":")[1]

    def combine(self, parts: Sequence[Any]) -> Any:
        """Many requests' rows -> one model input (the adaptive batch). No pandas where the
        model does not need it: all-numeric records become an array, kobe's its matrix."""
        if self.spec.task != "tabular":
            return np.concatenate(parts) if len(parts) > 1 else parts[0]
        records = [row for part in parts for row in part]
        if self.spec.numeric_only:
            names = self.spec.feature_names
            return np.array([[row[name] for name in names] for row in records], dtype=np.float64)
        if self.matrix is not None:
            return self.matrix(records_columns(records, self.spec))
        return records_frame(records, self.spec)


def load(spec: ModelSpec, stored: Any, threads: int) -> ServedModel:
    """A model from the BentoML store, checked against the spec it must have been trained with."""
    metadata = dict(stored.info.metadata)
    if metadata.get("spec_fingerprint") != spec.fingerprint():
        raise RuntimeError(
            f"{stored.tag} was trained for a different {spec.name} input schema "
            f"({metadata.get('spec_fingerprint')} != {spec.fingerprint()}): retrain it"
        )
    files = os.listdir(stored.path)
    if LITERT_MODEL_FILE in files:
        from service.litert import LiteRTModel

        model = LiteRTModel(Path(stored.path_of(LITERT_MODEL_FILE)).read_bytes(), threads)
        return ServedModel(spec, str(stored.tag), metadata, model, "litert", role=versions.role(stored))
    if ARRAYS_MODEL_FILE not in files:  # the fingerprint check above should have caught it
        raise RuntimeError(f"{stored.tag} has neither {LITERT_MODEL_FILE} nor {ARRAYS_MODEL_FILE} (the service "
                           f"runs neither Keras nor scikit-learn): retrain it (python -m training {spec.name})")
    kind, exported = arrays.read(Path(stored.path_of(ARRAYS_MODEL_FILE)).read_bytes())
    matrix = MODEL_MATRICES.get(spec.name)
    expected_input = matrix.__name__ if matrix is not None else "features"
    stored_input = metadata.get("arrays", {}).get("input")
    if stored_input != expected_input:
        raise RuntimeError(f"{stored.tag} takes {stored_input} where the service gives it {expected_input}: "
                           f"retrain it (python -m training {spec.name})")
    model = arrays.predictor(kind, exported)
    single_threaded = threading.local()

    def predict(rows: Any) -> np.ndarray:
        if not getattr(single_threaded, "set", False):
            one_thread_per_call()
            single_threaded.set = True
        return model(rows)

    return ServedModel(spec, str(stored.tag), metadata, predict, "arrays", matrix, role=versions.role(stored))


def one_thread_per_call() -> None:
    """BLAS (numpy's matrix products: the digits kernel) uses one thread.

    The batches are small: extra threads only spin against each other and the event loop
    (with scikit-learn's trees, kobe at 12 rows took 3.4 ms of CPU a call with one thread,
    7 ms with two, and was no faster). Called from each thread that runs a model, as
    OpenMP's limit belongs to the calling thread.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def warm_up(model: ServedModel) -> None:
    """Run the model once per batch shape it will see first, so no request pays for tracing."""
    spec = model.spec
    if spec.task == "tabular":
        row = {}
        for feature in spec.features:
            row[feature.name] = (feature.categories[0] if hasattr(feature, "categories")
                                 else feature.minimum)  # type: ignore[union-attr]
        sample: Any = model.combine([[row]])
    elif spec.features:  # digits: flat pixels
        sample = np.zeros((1, len(spec.features)))
    else:
        image = spec.image
        assert image is not None
        sample = np.zeros((1, image.height, image.width, image.channels), dtype=np.float32)
    probabilities = model.predict_proba(sample)
    if probabilities.shape != (1, len(spec.class_names)):
        raise RuntimeError(f"{model.tag}: warm-up gave shape {probabilities.shape}")
