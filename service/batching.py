"""Adaptive batching per model, shared by every route that serves the model.

Event-driven, with nothing that polls: an idle model starts a request at once (no waiting
for company); requests that arrive while a batch runs queue up and form the next batch,
up to max_batch_size rows, the moment a batch slot frees. Load is shed early, at
admission: a request whose predicted wait (the rows queued ahead of it, at the model's
measured cost per batch) would exceed max_latency_ms is answered 503 at once instead of
late; a request that still waited longer when its batch starts is shed then.

Where the model runs (chosen by measurement, docs/benchmarks.md): batches run on the
model's own thread, with the next one formed and queued there when batches_in_flight is 2
(the CNN: its compute releases the GIL and overlaps the event loop's HTTP work). A cheap
tabular model that is idle runs a request inline on the event loop instead
(Batching.on_event_loop), as a hand-written async route does: at concurrency 1 the
hand-off to a thread and back costs more than the call (iris: 16% more requests/s), while
under load inline batches slowed the loop (iris at c=32: 6% fewer).
"""

from __future__ import annotations

import asyncio
import collections
import math
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import tracing
from service.errors import Overloaded
from service.runtime import ServedModel

__all__ = ["AfterBatch", "ModelBatcher", "Overloaded"]

AfterBatch = Callable[[Sequence[Any], np.ndarray, float], None]
"""(each request's rows, the batch's probabilities, the model call's seconds): run once the
batch's callers have their answers (the drift monitor, the shadow)."""


@dataclass
class _Pending:
    rows: Any
    size: int
    future: asyncio.Future
    enqueued: float
    traced: bool = False
    """The request is traced: its batch records when the model call ran (service/tracing.py)."""
    enqueued_ns: int = 0
    call: tracing.ModelCall | None = None


class BatchCost:
    """Seconds a batch of n rows takes, as a + b*n, from the last batches the model ran.

    a is the median duration of recent small batches (n <= 2), b the median time per row
    of recent larger ones: medians, so one slow call (a thread's first, with its one-off
    set-up) does not make the batcher shed for the next minute. Until a batch has been
    measured the estimate is 0: nothing is shed on a guess.
    """

    def __init__(self, window: int = 50) -> None:
        self._small: collections.deque[float] = collections.deque(maxlen=window)
        self._per_row: collections.deque[float] = collections.deque(maxlen=window)
        self.fixed = 0.0
        self.per_row = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        if rows <= 2:
            self._small.append(seconds)
            self.fixed = statistics.median(self._small)
        else:
            self._per_row.append(max(seconds - self.fixed, 0.0) / rows)
            self.per_row = statistics.median(self._per_row)

    def seconds(self, batches: int, rows: int) -> float:
        """Time for `batches` model calls holding `rows` rows in all."""
        return self.fixed * batches + self.per_row * rows


class ModelBatcher:
    def __init__(self, model: ServedModel, observe: Callable[[str, int, int], None], enabled: bool = True,
                 after_batch: Sequence[AfterBatch] = ()) -> None:
        self.model = model
        self.enabled = enabled
        """False: every request is its own model call, on a pool thread (for comparisons)."""
        self._after_batch = tuple(after_batch)
        """Run on the model's thread behind the batch (on the loop after an inline call)."""
        batching = model.spec.batching
        self.max_batch_size = batching.max_batch_size
        self.max_latency = batching.max_latency_ms / 1000
        self.slots = batching.batches_in_flight
        self.inline_when_idle = batching.on_event_loop
        self.cost = BatchCost()
        self._observe = observe
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._queued_alone = 0
        self._queued_alone_rows = 0
        """Queued requests larger than max_batch_size (each will be a batch of its own), and their rows."""
        self._running = 0
        self._turn_busy = False
        # Batches run one after another on the model's own thread, in the order they formed.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{model.spec.name}")

    async def predict(self, rows: Any) -> np.ndarray:
        """Probabilities for rows (a list of records, or an array of preprocessed inputs)."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            return (await loop.run_in_executor(None, self._run_batch, [rows]))[0]
        size = len(rows)
        traced = tracing.recording()
        if self.inline_when_idle and not self._running and not self._queue and not self._turn_busy:
            # Idle: run now, no queue, no task, no hand-off. Requests that reach the model
            # later in this turn of the loop queue up and run as one batch.
            self._turn_busy = True
            loop.call_soon(self._end_turn)
            # The drift monitor then runs on the loop once this turn is done: handing it to
            # the model's thread for every lone request cost kobe 30% of its requests/s.
            if traced:
                enqueued_ns, call = tracing.now_ns(), tracing.ModelCall(requests=1, rows=size)
                output = self._timed_batch([rows], defer=loop.call_soon, call=call)[0]
                tracing.batch_spans(self.model.tag, enqueued_ns, call)
                return output
            return self._timed_batch([rows], defer=loop.call_soon)[0]
        self._admit(size)
        pending = _Pending(rows, size, loop.create_future(), time.monotonic(), traced)
        if traced:
            pending.enqueued_ns = tracing.now_ns()
        self._queue.append(pending)
        self._queued_rows += size
        self._queued_alone += size > self.max_batch_size
        self._queued_alone_rows += size if size > self.max_batch_size else 0
        self._start_batches()
        output = await pending.future
        if pending.call is not None:
            tracing.batch_spans(self.model.tag, pending.enqueued_ns, pending.call)
        return output

    def _end_turn(self) -> None:
        self._turn_busy = False

    def _admit(self, size: int) -> None:
        """Shed now what would wait too long: the batches queued and running ahead of it,
        counted as they will form (a request over max_batch_size runs alone, the others
        pack max_batch_size rows to a batch), at the model's measured cost."""
        if not self._queue and self._running < self.slots:
            return
        alone = size > self.max_batch_size
        alone_rows = self._queued_alone_rows + (size if alone else 0)
        packed_rows = self._queued_rows + size - alone_rows
        batches = self._running + self._queued_alone + alone + math.ceil(packed_rows / self.max_batch_size)
        rows = self._queued_rows + size + self._running * self.max_batch_size  # running: at most full
        if self.cost.seconds(batches, rows) / self.slots > self.max_latency:
            raise Overloaded("the server is overloaded; retry later")

    def _start_batches(self) -> None:
        while self._queue and self._running < self.slots:
            self._running += 1
            asyncio.get_running_loop().create_task(self._batch())

    def _take(self) -> list[_Pending]:
        """The next batch: whole requests off the queue, up to max_batch_size rows (a larger
        request runs alone); requests whose client left, or that waited too long, are dropped."""
        now = time.monotonic()
        parts: list[_Pending] = []
        rows = 0
        while self._queue and (not parts or rows + self._queue[0].size <= self.max_batch_size):
            job = self._queue.popleft()
            self._queued_rows -= job.size
            self._queued_alone -= job.size > self.max_batch_size
            self._queued_alone_rows -= job.size if job.size > self.max_batch_size else 0
            if job.future.done():  # cancelled: the client went away
                continue
            if now - job.enqueued >= self.max_latency:
                job.future.set_exception(Overloaded("the server is overloaded; retry later"))
                continue
            parts.append(job)
            rows += job.size
        return parts

    async def _batch(self) -> None:
        parts: list[_Pending] = []
        try:
            parts = self._take()
            if not parts:
                return
            inputs = [job.rows for job in parts]
            call = tracing.ModelCall(len(parts), sum(job.size for job in parts)) \
                if any(job.traced for job in parts) else None
            for job in parts:
                job.call = call if job.traced else None
            try:
                outputs: Sequence[Any] = await asyncio.get_running_loop().run_in_executor(
                    self._thread, self._timed_batch, inputs, None, call)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch re-raises it
                outputs = [exc] * len(parts)
        finally:
            self._running -= 1
            self._start_batches()  # before the callers below resume: the model never idles
        for job, output in zip(parts, outputs, strict=True):
            if job.future.done():
                continue
            if isinstance(output, Exception):
                job.future.set_exception(output)
            else:
                job.future.set_result(output)

    def _timed_batch(self, parts: Sequence[Any], defer: Callable[..., Any] | None = None,
                     call: tracing.ModelCall | None = None) -> list[np.ndarray]:
        started = time.perf_counter()
        if call is not None:
            call.started_ns = tracing.now_ns()
        outputs = self._run_batch(parts, defer)
        if call is not None:
            call.ended_ns = tracing.now_ns()
        self.cost.observe(sum(len(part) for part in parts), time.perf_counter() - started)
        return outputs

    def _run_batch(self, parts: Sequence[Any], defer: Callable[..., Any] | None = None) -> list[np.ndarray]:
        """One model call for every request in the batch; `defer` schedules the after-batch
        hook (default: queued on the model's thread, behind this batch)."""
        sizes = [len(part) for part in parts]
        self._observe(self.model.spec.name, len(parts), sum(sizes))
        started = time.perf_counter()
        probabilities = self.model.predict_proba(self.model.combine(parts))
        seconds = time.perf_counter() - started
        for hook in self._after_batch:  # off the callers' path
            (defer or self._thread.submit)(hook, parts, probabilities, seconds)
        return np.split(probabilities, np.cumsum(sizes)[:-1])

    def busy(self) -> bool:
        """Requests are waiting for this model (what the shadow gives way to). A running
        batch does not count: the shadow's batch has just finished running."""
        return bool(self._queue)
