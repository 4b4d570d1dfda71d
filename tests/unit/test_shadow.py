"""The shadow (service/shadow.py): exact comparison numbers, and nothing it does reaches a client."""

import asyncio
import threading

import numpy as np
import pytest

from service.batching import ModelBatcher
from service.runtime import ServedModel
from service.shadow import Shadow, configured_fraction, configured_queue
from service.specs import IRIS

FEATURES = IRIS.feature_names


def records(values):
    return [dict(zip(FEATURES, row, strict=True)) for row in values]


def linear_model(tag, weights, fail=False, gate=None, started=None):
    """A softmax over x @ weights: known probabilities for known rows. With `gate`, each
    call sets `started` and waits for the gate."""

    def predict_proba(rows):
        if gate is not None:
            started.set()
            gate.wait(10)
        if fail:
            raise RuntimeError("the challenger broke")
        scores = np.asarray(rows, np.float64) @ weights
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    return ServedModel(IRIS, tag, {}, predict_proba, "arrays")


RNG = np.random.default_rng(7)
CHAMPION_W = RNG.normal(size=(4, 3))
CHALLENGER_W = CHAMPION_W + RNG.normal(scale=0.8, size=(4, 3))


def test_the_report_is_exact_for_a_known_pair_of_models():
    champion, challenger = linear_model("iris:a", CHAMPION_W), linear_model("iris:b", CHALLENGER_W)
    shadow = Shadow(champion, challenger)
    batches = [RNG.uniform(0, 8, size=(n, 4)) for n in (1, 5, 3, 7)]
    requests = [[records(batch[:1]), records(batch[1:])] if len(batch) > 1 else [records(batch)]
                for batch in batches]
    for parts in requests:
        rows = champion.combine(parts)
        shadow.offer(parts, champion.predict_proba(rows), 0.001)
    shadow.drain()
    report = shadow.report()

    x = np.concatenate(batches)
    a, b = champion.predict_proba(x), challenger.predict_proba(x)
    assert report.requests_compared == sum(len(parts) for parts in requests) == 7
    assert report.rows_compared == len(x) == 16
    assert report.label_agreement == pytest.approx((a.argmax(1) == b.argmax(1)).mean(), abs=1e-12)
    assert 0 < report.label_agreement < 1, "the pair was chosen to disagree sometimes"
    assert report.mean_abs_diff == pytest.approx(np.abs(a - b).mean(), abs=1e-12)
    assert report.max_abs_diff == pytest.approx(np.abs(a - b).max(), abs=1e-12)
    names = IRIS.class_names
    assert report.class_distribution == {
        "champion": {n: int((a.argmax(1) == i).sum()) for i, n in enumerate(names)},
        "challenger": {n: int((b.argmax(1) == i).sum()) for i, n in enumerate(names)}}
    assert report.latency_ms["champion"].p50 == pytest.approx(1.0)
    assert report.latency_ms["challenger"].p99 is not None
    assert (report.errors, report.shed, report.champion, report.challenger) == (0, 0, "iris:a", "iris:b")


def test_before_any_request_the_report_has_no_ratios():
    report = Shadow(linear_model("iris:a", CHAMPION_W), linear_model("iris:b", CHALLENGER_W)).report()
    assert (report.requests_compared, report.label_agreement, report.mean_abs_diff) == (0, None, None)
    assert report.latency_ms["challenger"].p50 is None


def serve(batcher, batches, shadow=None):
    """One request after another, each once the shadow is done with the one before."""
    async def run():
        answers = []
        for parts in batches:
            answers.append(await batcher.predict(parts))
            await asyncio.sleep(0.01)
            if shadow is not None:
                shadow.drain()
        return answers
    return asyncio.run(run())


def test_a_challenger_that_raises_changes_no_answer_and_is_counted():
    calls = [records(RNG.uniform(0, 8, size=(n, 4))) for n in (1, 2, 3, 4)]
    plain = ModelBatcher(linear_model("iris:a", CHAMPION_W), lambda *a: None)
    expected = serve(plain, calls)

    champion = linear_model("iris:a", CHAMPION_W)
    shadow = Shadow(champion, linear_model("iris:b", CHALLENGER_W, fail=True))
    shadowed = ModelBatcher(champion, lambda *a: None, after_batch=[shadow.offer])
    shadow.give_way_to(shadowed.busy)
    answers = serve(shadowed, calls, shadow)
    assert all(np.array_equal(x, y) for x, y in zip(answers, expected, strict=True))
    report = shadow.report()
    assert report.errors == len(calls) and report.requests_compared == 0 and report.shed == 0


def test_the_shadow_gives_way_when_the_champion_has_work_and_when_its_queue_is_full():
    champion = linear_model("iris:a", CHAMPION_W)
    gate, started = threading.Event(), threading.Event()
    challenger = linear_model("iris:b", CHALLENGER_W, gate=gate, started=started)
    shadow = Shadow(champion, challenger, queue_rows=2, gather_seconds=0.01)
    one = [records([[1, 2, 3, 4]])]
    probabilities = champion.predict_proba(champion.combine(one))
    shadow.offer(one, probabilities, 0.001)  # taken by the thread, which waits on the gate
    assert started.wait(10)
    for _ in range(5):  # two wait in the queue, three are shed
        shadow.offer(one, probabilities, 0.001)
    gate.set()
    shadow.drain()
    assert (shadow.report().requests_compared, shadow.report().shed) == (3, 3)

    shadow.give_way_to(lambda: True)  # the champion is busy: its turn is shed
    shadow.offer(one, probabilities, 0.001)
    shadow.drain()
    assert (shadow.report().requests_compared, shadow.report().shed) == (3, 4)


def test_a_fraction_samples_requests():
    champion = linear_model("iris:a", CHAMPION_W)
    shadow = Shadow(champion, linear_model("iris:b", CHALLENGER_W), fraction=0.25, queue_rows=10_000, seed=3,
                    gather_seconds=0.01)
    parts = [records([[1, 2, 3, 4]])] * 4
    probabilities = champion.predict_proba(champion.combine(parts))
    for _ in range(500):
        shadow.offer(parts, probabilities, 0.001)
    shadow.drain()
    assert 400 < shadow.report().requests_compared < 600  # 2,000 requests at 0.25


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half", "nan"])
def test_a_bad_fraction_is_refused(monkeypatch, value):
    monkeypatch.setenv("SHADOW_FRACTION", value)
    with pytest.raises(ValueError, match="SHADOW_FRACTION"):
        configured_fraction()


def test_a_bad_queue_size_is_refused(monkeypatch):
    monkeypatch.setenv("SHADOW_QUEUE", "0")
    with pytest.raises(ValueError, match="SHADOW_QUEUE"):
        configured_queue()
