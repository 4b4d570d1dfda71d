"""The batcher with a real (small) model: batches form while the model is busy, run one
at a time on the model's thread, each caller gets its own rows back, overload sheds.

No assertion here reads a clock: what a test needs to hold still, a model blocked on an
Event or a primed cost model holds (speed is measured in docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from service.batching import ModelBatcher, Overloaded
from service.runtime import ServedModel
from service.specs import IRIS, ModelSpec

X, Y = load_iris(return_X_y=True)
CLASSIFIER = LogisticRegression(max_iter=500).fit(X, Y)


class SlowModel:
    """The iris classifier taking `seconds` a call, recording what ran and when."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[tuple[int, int]] = []  # (rows, thread id)
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
            self.calls.append((len(rows), threading.get_ident()))
        return CLASSIFIER.predict_proba(rows)


THREADED = replace(IRIS, batching=replace(IRIS.batching, on_event_loop=False))


def batcher(predict, observed: list[tuple[int, int]] | None = None, spec: ModelSpec = THREADED) -> ModelBatcher:
    served = ServedModel(spec, "iris:test", {}, predict, "arrays")
    served.combine = lambda parts: np.concatenate(parts)  # type: ignore[method-assign]  # arrays, not records
    record = observed.append if observed is not None else (lambda _: None)
    return ModelBatcher(served, lambda name, requests, rows: record((requests, rows)))


async def call_many(batcher: ModelBatcher, rows: list[np.ndarray], spacing: float = 0.0) -> list:
    async def one(i: int):
        await asyncio.sleep(i * spacing)
        try:
            return await batcher.predict(rows[i])
        except Overloaded as exc:
            return exc

    return await asyncio.gather(*(one(i) for i in range(len(rows))))


def test_requests_arriving_while_the_model_is_busy_share_a_call_and_get_their_own_rows():
    model, observed = SlowModel(0.05), []
    rows = [X[i: i + 1 + i % 3] for i in range(0, 120, 4)]  # 30 requests of 1-3 rows
    results = asyncio.run(call_many(batcher(model, observed), rows, spacing=0.002))
    for part, probabilities in zip(rows, results, strict=True):
        np.testing.assert_allclose(probabilities, CLASSIFIER.predict_proba(part))
    assert sum(r for r, _ in model.calls) == sum(len(p) for p in rows)
    assert len(model.calls) < len(rows) / 2, f"too few merged: {model.calls}"
    assert max(requests for requests, _ in observed) > 3
    assert model.most_at_once == 1, "two batches ran on the model at once"
    threads = {thread for _, thread in model.calls}
    assert len(threads) == 1 and threading.get_ident() not in threads, "one model thread, not the loop's"


def test_a_lone_request_does_not_wait_for_company():
    """The model is called while the event loop is blocked right after the request was
    handed on: no timer of the batcher (a wait for company) could have fired."""
    called = threading.Event()

    def model(rows: np.ndarray) -> np.ndarray:
        called.set()
        return CLASSIFIER.predict_proba(rows)

    observed: list[tuple[int, int]] = []
    loaded = batcher(model, observed)

    async def lone() -> bool:
        request = asyncio.ensure_future(loaded.predict(X[:1]))
        for _ in range(3):  # the request is admitted, its batch task starts, hands it to the model
            await asyncio.sleep(0)
        started = called.wait(timeout=30)  # blocks the loop
        await request
        return started

    assert asyncio.run(lone()), "the model was not called until the event loop ran again"

    async def sequential() -> None:
        for i in range(30):
            await loaded.predict(X[i: i + 1])

    asyncio.run(sequential())
    assert all(requests == 1 for requests, _ in observed), "a lone request was held for company"


def test_overload_is_shed_with_a_503_not_queued_forever():
    tight = replace(THREADED, batching=replace(IRIS.batching, max_latency_ms=100, max_batch_size=4))
    loaded = batcher(SlowModel(0.06), spec=tight)
    results = asyncio.run(call_many(loaded, [X[i: i + 1] for i in range(60)]))
    shed = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if not isinstance(r, Overloaded)]
    assert shed, "60 requests for a 4-row, 60 ms model with max_latency 100 ms: some must be shed"
    assert served, "the first requests fit within max_latency"
    assert all(isinstance(r, np.ndarray) and r.shape == (1, 3) for r in served)


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs():
    calls = []

    def flaky(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        if len(calls) == 1:
            raise ValueError("bad rows")
        return CLASSIFIER.predict_proba(rows)

    loaded = batcher(flaky)

    async def run():
        first = await asyncio.gather(loaded.predict(X[:1]), return_exceptions=True)
        second = await loaded.predict(X[1:2])
        return first, second

    first, second = asyncio.run(run())
    assert isinstance(first[0], ValueError)
    np.testing.assert_allclose(second, CLASSIFIER.predict_proba(X[1:2]))


def inline_batcher(predict, observed: list[tuple[int, int]] | None = None) -> ModelBatcher:
    spec = replace(IRIS, batching=replace(IRIS.batching, on_event_loop=True))
    return batcher(predict, observed, spec)


def test_on_the_event_loop_a_lone_request_runs_at_once_in_the_callers_thread():
    model, observed = SlowModel(0.0), []
    loaded = inline_batcher(model, observed)

    async def sequential() -> None:
        for i in range(10):
            await loaded.predict(X[i: i + 1])
            await asyncio.sleep(0)  # the next request comes in a later turn of the loop

    asyncio.run(sequential())
    assert observed == [(1, 1)] * 10
    assert {thread for _, thread in model.calls} == {threading.get_ident()}


def test_when_idle_inline_requests_of_the_same_loop_turn_share_a_call_on_the_model_thread():
    model, observed = SlowModel(0.0), []
    rows = [X[i: i + 2] for i in range(0, 40, 2)]  # 20 requests of 2 rows, all at once
    results = asyncio.run(call_many(inline_batcher(model, observed), rows))
    for part, probabilities in zip(rows, results, strict=True):
        np.testing.assert_allclose(probabilities, CLASSIFIER.predict_proba(part))
    assert observed[0] == (1, 2), "the first runs alone, at once"
    assert len(observed) <= 3 and max(requests for requests, _ in observed) >= 10, observed
    first, *rest = [thread for _, thread in model.calls]
    assert first == threading.get_ident() and rest and set(rest) == {rest[0]} != {first}


def test_overload_is_shed_at_admission_so_no_answer_comes_late():
    """With the model busy, requests are admitted only while the batches ahead of them fit
    in max_latency at the measured cost; the rest are refused at once, before any batch ends.

    A model measured at 20 ms a call, max_latency 100 ms, 4 rows a batch: the running batch
    plus 4 queued batches of 4 rows fit (5 x 20 ms), so 1 + 16 requests are admitted."""
    tight = replace(THREADED, batching=replace(THREADED.batching, max_latency_ms=100, max_batch_size=4))
    release = threading.Event()

    def held(rows: np.ndarray) -> np.ndarray:
        release.wait(timeout=30)
        return CLASSIFIER.predict_proba(rows)

    loaded = batcher(held, spec=tight)
    loaded.cost.observe(1, 0.02)  # the cost model as if measured: 20 ms a call, nothing per row

    async def run() -> tuple[int, int, list]:
        admitted, shed = [], 0
        for i in range(300):
            request = asyncio.ensure_future(loaded.predict(X[i % 150: i % 150 + 1]))
            await asyncio.sleep(0)  # admitted (queued) or refused now
            if request.done() and isinstance(request.exception(), Overloaded):
                shed += 1
            else:
                admitted.append(request)
        release.set()
        return len(admitted), shed, await asyncio.gather(*admitted, return_exceptions=True)

    admitted, shed, answers = asyncio.run(run())
    assert (admitted, shed) == (17, 283)
    assert isinstance(answers[0], np.ndarray), "the running batch is answered"


def test_a_request_larger_than_max_batch_size_is_served_whole():
    model, observed = SlowModel(0.0), []
    big = np.repeat(X, 7, axis=0)[:1000]  # the documented maximum, above max_batch_size
    result = asyncio.run(call_many(batcher(model, observed), [big, X[:1]]))
    np.testing.assert_allclose(result[0], CLASSIFIER.predict_proba(big))
    assert (1, 1000) in observed


def test_admission_counts_a_large_request_as_one_batch_not_as_many():
    """Eight 1,000-row calls to a model with 20 ms of fixed cost a call: about 0.25 s of work
    in all, so none is shed (counting them as 64-row batches predicted over 2 s)."""
    model, observed = SlowModel(0.02), []
    loaded = batcher(model, observed)

    # The cost model as measured on this model: 20 ms a call, nothing per row. (Measuring it
    # here would make the test depend on two sleeps taking the same time to 0.1 ms.)
    loaded.cost.observe(1, 0.02)
    loaded.cost.observe(3, 0.02)

    async def run() -> list:
        big = np.repeat(X, 7, axis=0)[:1000]
        return await call_many(loaded, [big] * 8)

    results = asyncio.run(run())
    assert not [r for r in results if isinstance(r, Overloaded)], "a large request was shed"
    assert observed.count((1, 1000)) == 8
