"""Adaptive batching per model, shared by every route that serves the model.

BentoML creates its adaptive-batching dispatcher (CorkDispatcher) only for a batchable
API's own route; JSON, multipart and (later) V2 routes of one model must share a queue,
so each model gets one dispatcher of that class, with its latency optimizer and its 503
load shedding. Two changes, both measured (docs/benchmarks.md): a finished batch hands
the model straight to the requests queued behind it, and each model runs on its own
thread, for the CNN with the next batch already formed and queued there
(Batching.batches_in_flight). bentoml is pinned to 1.4.39, the version this was read from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher, NonBlockSema, Optimizer
from bentoml.exceptions import ServiceUnavailable

from service.runtime import ServedModel


class Overloaded(ServiceUnavailable):
    """The batcher predicts a request would miss max_latency_ms: shed it (503)."""


def _shed() -> Any:
    raise Overloaded("the server is overloaded; retry later")


class BoundedWaitOptimizer(Optimizer):
    """BentoML's latency model, with the learned wait capped at one single-row model call.

    The dispatcher holds a request back while n * (its wait + a) <= the average past
    wait. That average feeds on itself: after a burst at concurrency 32 it stayed near
    13 ms, and every later request at concurrency 1 waited for company that never came
    (80 requests/s, p50 13 ms). Waiting longer than one model call does not pay anyway.
    """

    def trigger_refresh(self) -> None:
        super().trigger_refresh()
        self.wait = min(self.wait, self.o_a + self.o_b)


class ChainedCorkDispatcher(CorkDispatcher):
    """BentoML's dispatcher, except that a finished batch hands its slot straight to the
    requests that queued up while it ran.

    In BentoML's version the next batch waits for the controller, which polls every
    millisecond and whose wake-up queues behind the handlers of the batch that just
    finished (each one building and sending its response): on a busy event loop the
    model sat idle 4-5 ms between batches of 8 ms. The controller still decides when an
    idle model starts and sheds what its latency model says would miss max_latency (503).
    """

    async def outbound_call(self, inputs_info: tuple[Any, ...], training: bool = False) -> None:
        started = time.time()
        outputs: Sequence[Any]
        try:
            try:
                outputs = await self.callback(tuple(job.data for job in inputs_info))
                if len(outputs) != len(inputs_info):
                    raise RuntimeError(f"a batch of {len(inputs_info)} gave {len(outputs)} results")
                self.optimizer.log_outbound(n=len(inputs_info), duration=time.time() - started,
                                            wait=0 if training else started - inputs_info[0].enqueue_time)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch re-raises it
                outputs = [exc] * len(inputs_info)
            self._start_next_batch()  # before the callers below wake up
        except BaseException:
            self._sema.release()
            for job in inputs_info:
                job.future.cancel()
            raise
        for job, output in zip(inputs_info, outputs, strict=True):
            if not job.future.done():
                job.future.set_result(output)

    def _start_next_batch(self) -> None:
        """Keep the model slot for the queued requests, or release it to the controller."""
        now = time.time()
        # Requests that already waited max_latency are answered 503 (the rule BentoML's
        # controller applies while its latency model is untrained: no guessing here).
        while self._queue and now - self._queue[0].enqueue_time >= self.max_latency:
            self._queue.popleft().future.cancel()
        if self._queue:
            self._loop.create_task(self.outbound_call(tuple(self._get_inputs())))
        else:
            self._sema.release()


class ModelBatcher:
    def __init__(self, model: ServedModel, observe: Callable[[str, int, int], None], enabled: bool = True,
                 after_batch: Callable[[Sequence[Any], np.ndarray], None] | None = None) -> None:
        self.model = model
        self.enabled = enabled
        """False: every request is its own model call (for benchmarks and comparisons)."""
        self._observe = observe
        self._after_batch = after_batch
        """Called with (each request's rows, the probabilities) on the model's thread once the
        batch's callers have their answers (the drift monitor)."""
        self._dispatch: Callable[[Any], Any] | None = None
        # Batches run one after another on the model's own thread, in the order they formed.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{model.spec.name}")

    async def predict(self, rows: Any) -> np.ndarray:
        """Probabilities for rows (a list of records, or an array of preprocessed inputs)."""
        if not self.enabled:
            return (await anyio.to_thread.run_sync(self._run_batch, [rows]))[0]
        if self._dispatch is None:  # the dispatcher binds to the running event loop
            batching = self.model.spec.batching
            dispatcher = ChainedCorkDispatcher(
                max_latency_in_ms=batching.max_latency_ms, max_batch_size=batching.max_batch_size,
                fallback=_shed, get_batch_size=len, shared_sema=NonBlockSema(batching.batches_in_flight),
            )
            dispatcher.optimizer = BoundedWaitOptimizer(dispatcher.max_latency)
            self._dispatch = dispatcher(self._on_model_thread)
        return await self._dispatch(rows)

    async def _on_model_thread(self, parts: Sequence[Any]) -> list[np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run_batch, parts)

    def _run_batch(self, parts: Sequence[Any]) -> list[np.ndarray]:
        """One model call for every request in the batch, on the model's thread (batching off: a pool thread)."""
        sizes = [len(part) for part in parts]
        self._observe(self.model.spec.name, len(parts), sum(sizes))
        probabilities = self.model.predict_proba(self.model.combine(parts))
        if self._after_batch is not None:  # queued behind this batch: off its callers' path
            self._thread.submit(self._after_batch, parts, probabilities)
        return np.split(probabilities, np.cumsum(sizes)[:-1])
