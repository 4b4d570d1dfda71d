"""Shadow traffic: a second version of a model (the challenger, NAME_SHADOW_VERSION) scores
a sample of the real requests after and apart from the client's answer, so how it would
answer is known before it is promoted.

The shadow never delays, changes or fails an answer: it gets each batch's rows and the
champion's probabilities only once the batch's callers have theirs (ModelBatcher's
after-batch hook) and sets them aside under a lock, nothing more. A thread of its own
wakes GATHER_SECONDS after the first of them and scores everything set aside meanwhile
in calls of up to the model's max_batch_size rows, with a one-thread model: one wake-up
and one call for many requests, not one per request (per request, the hand-offs cost
iris 60% of its p50 at concurrency 1). It is shed first: rows are dropped (counted in
`shed`) when SHADOW_QUEUE rows already wait, or, when its turn comes, the champion has
requests waiting. A challenger that raises is counted in `errors` and logged at most
once a minute.

SHADOW_FRACTION (default 1.0) is the share of requests sampled, SHADOW_QUEUE (default
2048) the rows that may wait for the shadow.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from service.runtime import ServedModel

logger = logging.getLogger("bentoml.service.model_serving")

LATENCY_WINDOW = 10_000
"""Model calls whose duration the report's percentiles cover (the most recent ones)."""
GATHER_SECONDS = 0.1
"""How long the shadow lets requests gather before it scores them in one go."""


def configured_fraction() -> float:
    """SHADOW_FRACTION: the share of requests also scored by the shadow, 0 to 1."""
    raw = os.environ.get("SHADOW_FRACTION", "1.0")
    try:
        fraction = float(raw)
    except ValueError:
        fraction = -1.0
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"SHADOW_FRACTION={raw!r}: give a number from 0 to 1")
    return fraction


def configured_queue() -> int:
    """SHADOW_QUEUE: rows that may wait for the shadow before new ones are shed."""
    raw = os.environ.get("SHADOW_QUEUE", "2048")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"SHADOW_QUEUE={raw!r}: give a whole number of at least 1")
    return int(raw)


class Latency(BaseModel):
    p50: float | None = Field(description="milliseconds; null before the first call")
    p99: float | None


class ShadowReport(BaseModel):
    """How the challenger answered the sampled requests, compared with the champion, since start."""

    model: str
    champion: str = Field(description="the served version's tag: it answers clients")
    challenger: str = Field(description="the shadow version's tag: it only scores")
    fraction: float = Field(description="SHADOW_FRACTION: share of requests sampled")
    since: str = Field(description="when the service started shadowing (UTC)")
    requests_compared: int
    rows_compared: int
    label_agreement: float | None = Field(description="share of compared rows where both predict the same "
                                                      "class; null before any")
    mean_abs_diff: float | None = Field(description="mean |champion - challenger| over every class "
                                                    "probability of the compared rows")
    max_abs_diff: float | None = Field(description="largest such difference")
    class_distribution: dict[str, dict[str, int]] = Field(
        description="predicted classes of the compared rows: model role -> class -> rows")
    latency_ms: dict[str, Latency] = Field(
        description=f"model call durations, role -> p50/p99, over the last {LATENCY_WINDOW:,} calls: the "
                    "champion's whole batches on every CPU thread, the challenger's sampled rows on one")
    errors: int = Field(description="sampled requests the challenger failed on (clients never see it)")
    shed: int = Field(description="sampled requests not scored: the shadow was busy or the champion had work")


class ShadowMetrics:
    """The shadows' Prometheus series; labels: the model, and a bounded outcome or role."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.requests = Counter("model_shadow_requests", "sampled requests by outcome: compared, shed, error",
                                ["model", "outcome"])
        self.rows = Counter("model_shadow_rows_compared", "rows scored by both champion and challenger", ["model"])
        self.disagreements = Counter("model_shadow_label_disagreements",
                                     "compared rows where the challenger predicts another class", ["model"])
        self.agreement = Gauge("model_shadow_label_agreement", "share of compared rows with the same class "
                               "since start", ["model"], multiprocess_mode="livemostrecent")
        self.mean_abs_diff = Gauge("model_shadow_mean_abs_diff", "mean absolute probability difference since "
                                   "start", ["model"], multiprocess_mode="livemostrecent")


@dataclass
class _Job:
    parts: list[Any]
    champion_probabilities: np.ndarray
    rows: int


class Shadow:
    """One model's shadow: rows set aside, a thread, and the running comparison."""

    def __init__(self, champion: ServedModel, challenger: ServedModel, fraction: float = 1.0,
                 queue_rows: int = 2048, metrics: ShadowMetrics | None = None, seed: int | None = None,
                 gather_seconds: float = GATHER_SECONDS) -> None:
        self.champion, self.challenger = champion, challenger
        self.fraction = fraction
        self._busy: Callable[[], bool] = lambda: False
        self._queue_rows = queue_rows
        self._gather = gather_seconds
        self._pending: list[_Job] = []
        self._pending_rows = 0
        self._working = False
        self._wake = threading.Event()
        self._metrics = metrics
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._since = datetime.now(UTC).isoformat(timespec="seconds")
        n_classes = len(champion.spec.class_names)
        self._counts = {"champion": np.zeros(n_classes, np.int64), "challenger": np.zeros(n_classes, np.int64)}
        self._seconds: dict[str, collections.deque[float]] = {
            role: collections.deque(maxlen=LATENCY_WINDOW) for role in ("champion", "challenger")}
        self._requests = self._rows = self._agreeing = self._errors = self._shed = 0
        self._abs_diff_sum = 0.0
        self._abs_diff_max = 0.0
        self._last_error_log = 0.0
        self._thread = threading.Thread(target=self._work, name=f"shadow-{champion.spec.name}", daemon=True)
        self._thread.start()

    def give_way_to(self, busy: Callable[[], bool]) -> None:
        """`busy()` true: the champion has work waiting, and the shadow sheds its turn."""
        self._busy = busy

    # --- the client's path: cheap, never raises ---------------------------------------

    def offer(self, parts: Sequence[Any], probabilities: np.ndarray, seconds: float) -> None:
        """A batch the champion answered (called after its callers have their answers)."""
        if self.fraction >= 1.0:
            chosen: Sequence[int] = range(len(parts))
        else:
            chosen = [i for i in range(len(parts)) if self._random.random() < self.fraction]
        job = None
        if len(chosen) == len(parts):
            job = _Job(list(parts), probabilities, len(probabilities))
        elif chosen:
            sizes = [len(part) for part in parts]
            starts = np.concatenate([[0], np.cumsum(sizes)])
            rows = [probabilities[starts[i]:starts[i + 1]] for i in chosen]
            job = _Job([parts[i] for i in chosen], np.concatenate(rows), sum(sizes[i] for i in chosen))
        with self._lock:
            self._seconds["champion"].append(seconds)
            if job is None:
                return
            if self._pending_rows + job.rows > self._queue_rows:
                shed, job = len(job.parts), None
            else:
                self._pending.append(job)
                self._pending_rows += job.rows
                wake = len(self._pending) == 1
        if job is None:
            self._count_shed(shed)
        elif wake:
            self._wake.set()

    # --- the shadow's own thread ----------------------------------------------------

    def _work(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self._gather)  # let more requests gather: one call for all of them
            with self._lock:
                jobs, self._pending, self._pending_rows = self._pending, [], 0
                self._wake.clear()
                self._working = True
            try:
                self._score(jobs)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive anything a batch does
                self._count_error(sum(len(job.parts) for job in jobs), exc)
            finally:
                with self._lock:
                    self._working = False

    def _score(self, jobs: list[_Job]) -> None:
        """Score the gathered requests in calls of at most max_batch_size rows, each only
        while the champion has no request waiting (the rest are shed)."""
        limit = self.champion.spec.batching.max_batch_size
        call: list[_Job] = []
        for index, job in enumerate(jobs):
            call.append(job)
            last = index == len(jobs) - 1
            if last or sum(j.rows for j in call) + jobs[index + 1].rows > limit:
                if self._busy():  # the champion has clients waiting: they come first
                    self._count_shed(sum(len(j.parts) for j in call))
                else:
                    self._score_call(call)
                call = []

    def _score_call(self, jobs: list[_Job]) -> None:
        parts = [part for job in jobs for part in job.parts]
        champion = np.concatenate([job.champion_probabilities for job in jobs])
        try:
            started = time.perf_counter()
            probabilities = self.challenger.predict_proba(self.challenger.combine(parts))
            seconds = time.perf_counter() - started
            if probabilities.shape != champion.shape:
                raise ValueError(f"the challenger answered shape {probabilities.shape} for {champion.shape}")
        except Exception as exc:  # noqa: BLE001 - counted and logged; never reaches a client
            self._count_error(len(parts), exc)
            return
        self.compare(champion, probabilities, len(parts), seconds)

    def compare(self, champion: np.ndarray, challenger: np.ndarray, requests: int, seconds: float) -> None:
        """Add one scored batch to the running comparison."""
        labels_a, labels_b = champion.argmax(axis=1), challenger.argmax(axis=1)
        differences = np.abs(np.asarray(champion, np.float64) - np.asarray(challenger, np.float64))
        agreeing = int((labels_a == labels_b).sum())
        n_classes = champion.shape[1]
        with self._lock:
            self._requests += requests
            self._rows += len(champion)
            self._agreeing += agreeing
            self._abs_diff_sum += float(differences.sum())
            self._abs_diff_max = max(self._abs_diff_max, float(differences.max(initial=0.0)))
            self._counts["champion"] += np.bincount(labels_a, minlength=n_classes)
            self._counts["challenger"] += np.bincount(labels_b, minlength=n_classes)
            self._seconds["challenger"].append(seconds)
            rows, agreement, mean_diff = self._rows, self._agreeing / self._rows, self._mean_abs_diff()
        if self._metrics is not None:
            name = self.champion.spec.name
            self._metrics.requests.labels(model=name, outcome="compared").inc(requests)
            self._metrics.rows.labels(model=name).inc(len(champion))
            self._metrics.disagreements.labels(model=name).inc(len(champion) - agreeing)
            self._metrics.agreement.labels(model=name).set(agreement if rows else float("nan"))
            self._metrics.mean_abs_diff.labels(model=name).set(mean_diff)

    def _mean_abs_diff(self) -> float:
        return self._abs_diff_sum / (self._rows * len(self.champion.spec.class_names))

    def _count_shed(self, requests: int) -> None:
        with self._lock:
            self._shed += requests
        if self._metrics is not None:
            self._metrics.requests.labels(model=self.champion.spec.name, outcome="shed").inc(requests)

    def _count_error(self, requests: int, exc: Exception) -> None:
        with self._lock:
            self._errors += requests
        if self._metrics is not None:
            self._metrics.requests.labels(model=self.champion.spec.name, outcome="error").inc(requests)
        now = time.monotonic()
        if now - self._last_error_log >= 60:
            self._last_error_log = now
            logger.warning("shadow %s failed on %d request(s): %s: %s (counted in errors; clients unaffected)",
                           self.challenger.tag, requests, type(exc).__name__, exc)

    # --- the report -------------------------------------------------------------------

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued batch has been scored or shed (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending and not self._working and not self._wake.is_set():
                    return
            time.sleep(0.005)

    def report(self) -> ShadowReport:
        names = self.champion.spec.class_names
        with self._lock:
            rows = self._rows
            seconds = {role: list(values) for role, values in self._seconds.items()}
            return ShadowReport(
                model=self.champion.spec.name, champion=self.champion.tag, challenger=self.challenger.tag,
                fraction=self.fraction, since=self._since,
                requests_compared=self._requests, rows_compared=rows,
                label_agreement=self._agreeing / rows if rows else None,
                mean_abs_diff=self._mean_abs_diff() if rows else None,
                max_abs_diff=self._abs_diff_max if rows else None,
                class_distribution={role: {name: int(n) for name, n in zip(names, counts, strict=True)}
                                    for role, counts in self._counts.items()},
                latency_ms={role: _percentiles(values) for role, values in seconds.items()},
                errors=self._errors, shed=self._shed,
            )


def _percentiles(seconds: list[float]) -> Latency:
    if not seconds:
        return Latency(p50=None, p99=None)
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return Latency(p50=round(float(p50), 4), p99=round(float(p99), 4))
