"""Adaptive batching per model, shared by every route that serves the model.

BentoML creates its adaptive-batching dispatcher (CorkDispatcher) only for a batchable
API's own route; JSON, multipart and (later) V2 routes of one model must share a queue,
so each model gets one dispatcher of the same class, with the same latency optimizer and
the same 503 load shedding. bentoml is pinned to 1.4.39, the version this was read from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer
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


class ModelBatcher:
    def __init__(self, model: ServedModel, observe: Callable[[str, int, int], None], enabled: bool = True) -> None:
        self.model = model
        self.enabled = enabled
        """False: every request is its own model call (for benchmarks and comparisons)."""
        self._observe = observe
        self._dispatch: Callable[[Any], Any] | None = None

    async def predict(self, rows: Any) -> np.ndarray:
        """Probabilities for rows (a list of records, or an array of preprocessed inputs)."""
        if not self.enabled:
            return (await anyio.to_thread.run_sync(self._run_batch, [rows]))[0]
        if self._dispatch is None:  # the dispatcher binds to the running event loop
            batching = self.model.spec.batching
            dispatcher = CorkDispatcher(
                max_latency_in_ms=batching.max_latency_ms, max_batch_size=batching.max_batch_size,
                fallback=_shed, get_batch_size=len,
            )
            dispatcher.optimizer = BoundedWaitOptimizer(dispatcher.max_latency)
            self._dispatch = dispatcher(self._run_batch)
        return await self._dispatch(rows)

    def _run_batch(self, parts: Sequence[Any]) -> list[np.ndarray]:
        """One model call for every request in the batch; runs in a worker thread."""
        sizes = [len(part) for part in parts]
        self._observe(self.model.spec.name, len(parts), sum(sizes))
        probabilities = self.model.predict_proba(self.model.combine(parts))
        return np.split(probabilities, np.cumsum(sizes)[:-1])
