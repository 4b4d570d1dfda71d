"""Drift monitoring inside the service: is a model being asked about a world it never saw?

Training summarises the training split in a `Profile` saved with the model: numeric
features as quantile bins, categorical ones as category frequencies (plus "other" and
"unseen" buckets), images as a few per-image statistics (binned like numbers), and the
share of each predicted class. Serving keeps one `DriftMonitor` per model: the last
DRIFT_WINDOW rows as bin indices in a fixed ring buffer (bounded memory whatever the
traffic), updated on the model's thread after each batch, and compares the window with the
reference by the Population Stability Index (PSI) of every feature and of the predictions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from service.specs import CategoricalFeature, ImageInput, ModelSpec

logger = logging.getLogger("bentoml.service.drift")

PSI_THRESHOLD = 0.2
"""A feature whose PSI exceeds this has drifted (the usual reading: below 0.1 stable,
0.1-0.2 a moderate shift, above 0.2 a significant one)."""
MIN_ROWS = 200
"""No statistic and no verdict before the window holds this many rows: with 10 bins the PSI
of an unchanged distribution is about 10 / rows, so small samples look drifted."""
EPSILON = 1e-3
"""Added to every bin's share before the PSI's logarithm, so that empty bins stay finite."""
BINS = 10
"""Quantile bins per numeric feature; a categorical feature keeps its BINS - 2 most frequent
training categories as bins of their own and pools the rest in "other"."""
DEFAULT_WINDOW = 1000
IMAGE_STATISTICS = ("image_mean", "image_std", "image_dark_fraction")
"""Per-image statistics of the model input, on a 0..1 intensity scale: brightness,
contrast and the share of near-black pixels (below DARK)."""
DARK = 0.1
OTHER, UNSEEN = "(other)", "(unseen)"
PROFILE_VERSION = 1
PUBLISH_INTERVAL_S = 0.5
"""The gauges are set at most this often per model (the last batches at most this late)."""


def configured_window() -> int:
    """DRIFT_WINDOW: how many recent rows each model's monitor compares with its profile
    (0: no monitoring, for measuring what it costs)."""
    text = os.environ.get("DRIFT_WINDOW", str(DEFAULT_WINDOW))
    if not text.isdigit():
        raise ValueError(f"DRIFT_WINDOW must be a non-negative integer, not {text!r}")
    return int(text)


def image_statistics(rows: np.ndarray, image: ImageInput) -> np.ndarray:
    """(images, 3): IMAGE_STATISTICS of model inputs (any shape per image, in model scale)."""
    pixels = rows.reshape(len(rows), -1).astype(np.float32) / np.float32(255 * image.scale)
    return np.column_stack([pixels.mean(axis=1), pixels.std(axis=1), (pixels < DARK).mean(axis=1)])


def profiled_columns(spec: ModelSpec, rows: Any) -> dict[str, Any]:
    """The monitored columns of validated rows (the records of a tabular model, or an image
    model's input array): a tabular model's features, or an image model's per-image
    statistics (digits too: its 64 pixels are an image)."""
    if spec.image is not None:
        return dict(zip(IMAGE_STATISTICS, image_statistics(np.asarray(rows), spec.image).T, strict=True))
    if isinstance(rows, np.ndarray):  # a numeric_only model's training array
        return {name: rows[:, i] for i, name in enumerate(spec.feature_names)}
    if hasattr(rows, "to_dict"):  # a training frame
        rows = rows.to_dict("records")
    return {name: [record[name] for record in rows] for name in spec.feature_names}


@dataclass(frozen=True)
class FeatureProfile:
    """One monitored column's bins and the share of training rows in each."""

    name: str
    reference: tuple[float, ...]
    edges: tuple[float, ...] = ()
    """Numeric: inner bin edges; bin i holds edges[i-1] <= x < edges[i], outer bins are open."""
    categories: tuple[str, ...] = ()
    """Categorical: one bin each, then OTHER (the rest seen in training), then UNSEEN."""
    others: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return bool(self.categories)

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 2 if self.categorical else len(self.edges) + 1

    @cached_property
    def _codes(self) -> dict[Any, int]:
        return {**{c: len(self.categories) for c in self.others}, **{c: i for i, c in enumerate(self.categories)}}

    def bins(self, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        """The bin index of each value."""
        if self.categorical:
            codes, unseen = self._codes, len(self.categories) + 1
            return np.fromiter((codes.get(v, unseen) for v in values), np.int64, len(values))
        return np.searchsorted(np.asarray(self.edges), np.asarray(values, dtype=np.float64), side="right")

    def bin_labels(self) -> list[str]:
        """Readable bin names, for reports and plots."""
        if self.categorical:
            return [*self.categories, OTHER, UNSEEN]
        edges = [f"{e:.4g}" for e in self.edges]
        inner = [f"[{lo}, {hi})" for lo, hi in zip(edges, edges[1:], strict=False)]
        return [f"< {edges[0]}", *inner, f">= {edges[-1]}"]

    @classmethod
    def numeric_from(cls, name: str, values: Sequence[float] | np.ndarray) -> FeatureProfile:
        quantiles = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, BINS + 1)[1:-1])
        profile = cls(name, (), edges=tuple(float(e) for e in np.unique(quantiles)))
        return cls(name, shares(profile.bins(values), profile.n_bins), edges=profile.edges)

    @classmethod
    def categorical_from(cls, name: str, values: Sequence[str] | np.ndarray) -> FeatureProfile:
        seen, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
        ranked = [str(c) for _, c in sorted(zip(-counts, seen, strict=True))]
        profile = cls(name, (), categories=tuple(ranked[:BINS - 2]), others=tuple(ranked[BINS - 2:]))
        return cls(name, shares(profile.bins(values), profile.n_bins), categories=profile.categories,
                   others=profile.others)


def shares(bins: np.ndarray, n_bins: int) -> tuple[float, ...]:
    """The share of rows in each bin."""
    return tuple(float(s) for s in np.bincount(bins, minlength=n_bins) / max(len(bins), 1))


def psi(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Population Stability Index along the last axis (bins): the sum of (cur - ref) * ln(cur / ref)
    over bins, each share p smoothed to (p + EPSILON) / (1 + bins * EPSILON). Bins that are 0 in
    both add nothing, so rows of a (columns, bins) array may be padded with zeros."""
    bins = np.shape(reference)[-1]
    ref = (np.asarray(reference, dtype=np.float64) + EPSILON) / (1 + bins * EPSILON)
    cur = (np.asarray(current, dtype=np.float64) + EPSILON) / (1 + bins * EPSILON)
    return ((cur - ref) * np.log(cur / ref)).sum(axis=-1)


@dataclass(frozen=True)
class Profile:
    """The reference a model's traffic is compared with, computed on its training split."""

    features: tuple[FeatureProfile, ...]
    prediction: tuple[float, ...]
    """Share of each predicted class (argmax) on the training split."""
    rows: int

    @classmethod
    def from_training(cls, spec: ModelSpec, inputs: Any, probabilities: np.ndarray) -> Profile:
        """inputs: the training split's features (a frame of records, or the image array)."""
        categorical = {f.name for f in spec.features if isinstance(f, CategoricalFeature)}
        features = tuple(
            FeatureProfile.categorical_from(name, values) if name in categorical
            else FeatureProfile.numeric_from(name, values)
            for name, values in profiled_columns(spec, inputs).items()
        )
        predicted = shares(np.asarray(probabilities).argmax(axis=1), len(spec.class_names))
        return cls(features, predicted, len(probabilities))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION, "rows": self.rows, "prediction": list(self.prediction),
            "features": [{"name": f.name, "reference": list(f.reference), "edges": list(f.edges),
                          "categories": list(f.categories), "others": list(f.others)} for f in self.features],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        if data.get("version") != PROFILE_VERSION:
            raise ValueError(f"drift profile version {data.get('version')}; this service reads {PROFILE_VERSION}")
        features = tuple(FeatureProfile(f["name"], tuple(f["reference"]), tuple(f["edges"]),
                                        tuple(f["categories"]), tuple(f["others"])) for f in data["features"])
        return cls(features, tuple(data["prediction"]), int(data["rows"]))

    @classmethod
    def of_model(cls, tag: str, metadata: dict[str, Any]) -> Profile:
        """The profile saved with a stored model (metadata key drift_profile)."""
        if "drift_profile" not in metadata:
            raise RuntimeError(f"{tag} was saved without a drift profile: retrain it")
        return cls.from_json(metadata["drift_profile"])


class Bin(BaseModel):
    label: str = Field(description="a value range ('[a, b)'), a category, '(other)', '(unseen)' or a class")
    reference: float = Field(description="share of the training rows in this bin")
    recent: float = Field(description="share of the window's rows in this bin")


class FeatureDrift(BaseModel):
    name: str = Field(description="feature (or image statistic) name; 'prediction' for the predicted class")
    statistic: float | None = Field(description="PSI of the window against the training profile; "
                                                "null until the window holds minimum_rows rows")
    threshold: float = Field(description="PSI above which the column counts as drifted")
    drifted: bool
    bins: list[Bin] = Field(description="where the shares moved: the reference and recent share of each bin")


class DriftReport(BaseModel):
    """Recent traffic of one model compared with its training data."""

    model: str
    drifted: bool = Field(description="any feature or the prediction distribution drifted")
    window: int = Field(description="rows in the window (the most recent ones)")
    window_size: int = Field(description="rows the window holds at most (DRIFT_WINDOW)")
    rows_seen: int = Field(description="rows observed since the service started")
    minimum_rows: int = Field(description="rows needed before any verdict")
    method: str = Field("psi", description="the statistic: Population Stability Index")
    features: list[FeatureDrift]
    prediction: FeatureDrift


Publish = Callable[[str, list[str], np.ndarray, int], None]
"""(model, column names, statistics (features then prediction; NaN before MIN_ROWS), rows)."""


class DriftMonitor:
    """A model's last `window` rows as bin indices, with running counts per bin."""

    def __init__(self, spec: ModelSpec, profile: Profile, window: int, publish: Publish | None = None) -> None:
        self.spec = spec
        self.profile = profile
        self.names = [f.name for f in profile.features]
        sizes = [f.n_bins for f in profile.features] + [len(spec.class_names)]
        width = max(sizes)
        self._reference = np.zeros((len(sizes), width))
        for row, reference in enumerate([*(f.reference for f in profile.features), profile.prediction]):
            self._reference[row, :len(reference)] = reference
        self._offsets = np.arange(len(sizes)) * width  # column j's bin b counts at j * width + b
        self._ring = np.zeros((window, len(sizes)), dtype=np.int64)
        self._counts = np.zeros(len(sizes) * width, dtype=np.int64)
        self._seen = 0
        self._lock = threading.Lock()  # observe() on the model's thread, report() on the event loop
        self._publish = publish
        self._next_publish = 0.0
        self._publish_pending = False
        if publish is not None:  # the series exist from the start, before any traffic
            publish(spec.name, self.names, np.full(len(sizes), np.nan), 0)

    @property
    def window_size(self) -> int:
        return len(self._ring)

    def observe(self, parts: Sequence[Any], probabilities: np.ndarray, seconds: float = 0.0) -> None:
        """Add a batch (each request's validated rows, the batch's probabilities) to the window.
        Runs after the batch, on the model's thread (a batching.AfterBatch hook: `seconds`
        is not used); a failure is logged, never seen by a request."""
        try:
            rows = np.concatenate(parts) if self.spec.image else [row for part in parts for row in part]
            columns = [f.bins(values) for f, values in
                       zip(self.profile.features, profiled_columns(self.spec, rows).values(), strict=True)]
            self.add(np.column_stack([*columns, np.asarray(probabilities).argmax(axis=1)]))
            if self._publish is not None:
                self._publish_soon()
        except Exception:  # noqa: BLE001 - monitoring must not take serving down; the log says why
            logger.exception("drift monitor of %s failed on a batch", self.spec.name)

    def _publish_soon(self) -> None:
        """Publish now if the last publication is PUBLISH_INTERVAL_S old, else once it is.

        Computing every statistic and setting the gauges after every batch was 45% of the
        monitor's cost at concurrency 1 (kobe: 4-5% of the request's CPU), for gauges that
        are scraped every 15-30 s. The last batches are published at most 0.5 s late.
        """
        now = time.monotonic()
        if now >= self._next_publish:
            self._next_publish = now + PUBLISH_INTERVAL_S
            self._publish_now()
        elif not self._publish_pending:
            self._publish_pending = True
            timer = threading.Timer(self._next_publish - now, self._publish_late)
            timer.daemon = True
            timer.start()

    def _publish_late(self) -> None:
        self._publish_pending = False
        self._next_publish = time.monotonic() + PUBLISH_INTERVAL_S
        try:
            self._publish_now()
        except Exception:  # noqa: BLE001 - as in observe()
            logger.exception("drift monitor of %s failed to publish", self.spec.name)

    def _publish_now(self) -> None:
        assert self._publish is not None
        window, statistics = self.statistics()
        self._publish(self.spec.name, self.names, statistics, window)

    def add(self, bins: np.ndarray) -> None:
        """Rows of bin indices (rows, features + 1) into the ring; the oldest rows drop out."""
        size, total = len(self._ring), len(bins)
        bins = bins[-size:]
        with self._lock:
            start = self._seen + total - len(bins)
            positions = (start + np.arange(len(bins))) % size
            held = positions[positions < min(self._seen, size)]  # slots that hold a row now
            self._counts -= self._tally(self._ring[held])
            self._ring[positions] = bins
            self._counts += self._tally(bins)
            self._seen += total

    def _tally(self, bins: np.ndarray) -> np.ndarray:
        return np.bincount((bins + self._offsets).ravel(), minlength=len(self._counts))

    def _snapshot(self) -> tuple[int, int, np.ndarray]:
        """(rows in the window, rows seen, share of the window in each bin (columns, bins))."""
        with self._lock:
            rows, seen, counts = min(self._seen, len(self._ring)), self._seen, self._counts.copy()
        return rows, seen, counts.reshape(self._reference.shape) / max(rows, 1)

    def statistics(self) -> tuple[int, np.ndarray]:
        """(rows in the window, PSI of each feature then of the prediction; NaN before MIN_ROWS)."""
        rows, _, current = self._snapshot()
        return rows, _judged_psi(rows, self._reference, current)

    def report(self) -> DriftReport:
        rows, seen, current = self._snapshot()
        statistics = _judged_psi(rows, self._reference, current)
        labels = [*(f.bin_labels() for f in self.profile.features), list(self.spec.class_names)]
        judged = [
            FeatureDrift(name=name, statistic=None if np.isnan(value) else float(value), threshold=PSI_THRESHOLD,
                         drifted=bool(value > PSI_THRESHOLD),  # NaN compares False: no verdict
                         bins=[Bin(label=label, reference=float(reference), recent=float(recent))
                               for label, reference, recent in zip(names, self._reference[i], current[i],
                                                                   strict=False)])
            for i, (name, value, names) in enumerate(zip([*self.names, "prediction"], statistics, labels,
                                                         strict=True))
        ]
        return DriftReport(model=self.spec.name, drifted=any(c.drifted for c in judged), window=rows,
                           window_size=self.window_size, rows_seen=seen, minimum_rows=MIN_ROWS,
                           features=judged[:-1], prediction=judged[-1])


def _judged_psi(rows: int, reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    return psi(reference, current) if rows >= MIN_ROWS else np.full(len(reference), np.nan)


class DriftGauges:
    """The monitors' statistics as Prometheus gauges (create it after BentoML has set up
    multiprocess metrics: the gauges keep the most recent value of live processes)."""

    def __init__(self) -> None:
        from prometheus_client import Gauge

        mode = "livemostrecent"
        self.input = Gauge("model_input_drift", f"PSI of a feature over the recent window vs training "
                           f"(drifted above {PSI_THRESHOLD}; NaN before {MIN_ROWS} rows)",
                           ["model", "feature"], multiprocess_mode=mode)
        self.prediction = Gauge("model_prediction_drift", "PSI of the predicted-class distribution over "
                                "the recent window vs training", ["model"], multiprocess_mode=mode)
        self.window = Gauge("model_drift_window_rows", "rows in the drift window", ["model"],
                            multiprocess_mode=mode)

    def publish(self, model: str, names: list[str], statistics: np.ndarray, rows: int) -> None:
        for name, value in zip(names, statistics, strict=False):
            self.input.labels(model=model, feature=name).set(float(value))
        self.prediction.labels(model=model).set(float(statistics[-1]))
        self.window.labels(model=model).set(rows)
