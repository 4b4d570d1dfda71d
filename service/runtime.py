"""Loading a stored model for serving, and the one function that runs it on a batch."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.linear import linear_predictor
from service.preprocessing import MODEL_MATRICES, records_columns, records_frame
from service.specs import KERAS_MODEL_FILE, LITERT_MODEL_FILE, ModelSpec
from service.trees import fold_category_encoder


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


@dataclass
class ServedModel:
    spec: ModelSpec
    tag: str
    metadata: dict[str, Any]
    predict_proba: Callable[[Any], np.ndarray]
    """Rows in model form (DataFrame or array) -> probabilities (n, classes)."""
    framework: str
    """"sklearn" or "litert"."""
    matrix: Callable[[Any], np.ndarray] | None = None
    """Columns -> the model's matrix, where the stored pipeline starts with this step
    (preprocessing.MODEL_MATRICES) and predict_proba runs the rest of it."""

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
        return ServedModel(spec, str(stored.tag), metadata, model, "litert")
    if KERAS_MODEL_FILE in files:  # the fingerprint check above should have caught it
        raise RuntimeError(f"{stored.tag} has no {LITERT_MODEL_FILE} (the service runs LiteRT, not Keras): "
                           f"retrain it (python -m training {spec.name})")
    import bentoml
    import sklearn

    model = bentoml.sklearn.load_model(stored)
    matrix = MODEL_MATRICES.get(spec.name)
    if matrix is not None:
        model = _after_matrix_step(model, matrix, str(stored.tag))
        folded = fold_category_encoder(model)
        if folded is not None:
            model, encode = folded
            matrix = _then(matrix, encode)
    if spec.numeric_only:
        linear = linear_predictor(model, _probe_rows(spec))
        if linear is not None:
            return ServedModel(spec, str(stored.tag), metadata, linear, "sklearn")
    single_threaded = threading.local()

    def predict(rows: Any) -> np.ndarray:
        if not getattr(single_threaded, "set", False):
            one_thread_per_call()
            # Inputs were validated already: skip sklearn's finiteness and parameter checks
            # (kobe, 16 rows: 11.7 -> 9.5 ms a call). sklearn's config is per thread.
            sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
            single_threaded.set = True
        return model.predict_proba(rows)

    return ServedModel(spec, str(stored.tag), metadata, predict, "sklearn", matrix)


def _probe_rows(spec: ModelSpec, rows: int = 256) -> np.ndarray:
    """Rows spread over every feature's valid range (and its two ends), for parity checks."""
    low = np.array([f.minimum for f in spec.numeric_features])
    high = np.array([f.maximum for f in spec.numeric_features])
    spread = np.random.default_rng(0).uniform(low, high, size=(rows, len(low)))
    return np.vstack([low, high, spread])


def _then(first: Callable[[Any], np.ndarray], second: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def both(columns: Any) -> np.ndarray:
        return second(first(columns))

    return both


def _after_matrix_step(pipeline: Any, matrix: Callable, tag: str) -> Any:
    """The stored pipeline without its first step, which must be FunctionTransformer(matrix)."""
    steps = getattr(pipeline, "steps", None)
    if not steps or getattr(steps[0][1], "func", None) is not matrix:
        raise RuntimeError(f"{tag} does not start with {matrix.__name__}: retrain it")
    rest = pipeline[1:]
    return rest.steps[0][1] if len(rest.steps) == 1 else rest


def one_thread_per_call() -> None:
    """OpenMP and BLAS use one thread for calls from this thread.

    sklearn's batches are small: extra threads only spin against each other, the event
    loop and TensorFlow (kobe, 12 rows: 3.4 ms of CPU a call with one thread, 7 ms with
    two, and no faster). OpenMP's thread count belongs to the calling thread, so each
    thread that runs a model sets it once; a limit set at start-up did nothing, as
    sklearn's OpenMP runtime was not loaded yet.
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
