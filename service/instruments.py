"""The worker's own Prometheus metrics: batch sizes per model and garbage-collection pauses.

Create Instruments in the worker, after BentoML has set up multiprocess metrics (the
service's __init__), never at import: the arbiter imports the service too.
"""

from __future__ import annotations

import collections
import gc
import threading
import time

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
GC_PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
GC_DRAIN_INTERVAL_S = 1.0
"""How often measured GC pauses are moved into their histogram (a scrape sees them at most this late)."""


class Instruments:
    def __init__(self) -> None:
        from prometheus_client import Histogram

        self._batch_requests = Histogram("model_batch_requests", "requests merged into one model call",
                                         ["model"], buckets=BATCH_BUCKETS)
        self._batch_rows = Histogram("model_batch_rows", "rows (records or images) in one model call",
                                     ["model"], buckets=BATCH_BUCKETS)
        self.gc_pauses = GcPauses()

    def observe_batch(self, model: str, requests: int, rows: int) -> None:
        """One model call: how many requests it merged, and their rows."""
        self._batch_requests.labels(model=model).observe(requests)
        self._batch_rows.labels(model=model).observe(rows)


class GcPauses:
    """Times every garbage collection of the process into `python_gc_pause_seconds`.

    The GC callback only appends to a deque: it may run while prometheus_client holds its
    (non-reentrant) lock, so observing there could deadlock the worker. A daemon thread
    moves the pauses into the histogram every GC_DRAIN_INTERVAL_S.
    """

    def __init__(self) -> None:
        from prometheus_client import Histogram

        self._histogram = Histogram("python_gc_pause_seconds", "garbage collection pauses of the worker",
                                    ["generation"], buckets=GC_PAUSE_BUCKETS)
        self._pending: collections.deque[tuple[int, float]] = collections.deque(maxlen=10_000)
        self._started = 0.0

    def start(self) -> None:
        gc.callbacks.append(self._time_gc)
        threading.Thread(target=self._drain_every_interval, name="gc-pauses", daemon=True).start()

    def drain(self) -> None:
        """Move the pauses measured so far into the histogram."""
        while True:
            try:
                generation, seconds = self._pending.popleft()
            except IndexError:
                return
            self._histogram.labels(generation=str(generation)).observe(seconds)

    def _drain_every_interval(self) -> None:
        while True:
            time.sleep(GC_DRAIN_INTERVAL_S)
            self.drain()

    def _time_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._pending.append((info["generation"], time.perf_counter() - self._started))
