"""Drift statistics: PSI, bins, the profile's JSON form and the monitor's bounded window."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest

from service import drift
from service.drift import MIN_ROWS, PSI_THRESHOLD, DriftMonitor, FeatureProfile, Profile, psi
from service.specs import IRIS, KOBE, MALARIA


def test_psi_is_zero_for_equal_shares_and_matches_the_formula():
    reference = np.array([0.5, 0.3, 0.2])
    assert psi(reference, reference) == pytest.approx(0.0)
    current = np.array([0.2, 0.3, 0.5])
    smooth = lambda p: (p + drift.EPSILON) / (1 + 3 * drift.EPSILON)  # noqa: E731
    expected = sum((c - r) * math.log(c / r) for r, c in zip(smooth(reference), smooth(current), strict=True))
    assert psi(reference, current) == pytest.approx(expected)
    assert psi(reference, current) > PSI_THRESHOLD  # a big shift reads as drift


def test_psi_stays_finite_for_empty_bins_and_ignores_zero_padding():
    value = psi(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert np.isfinite(value) and value > 5
    padded = psi(np.array([[0.5, 0.5, 0.0, 0.0]]), np.array([[0.4, 0.6, 0.0, 0.0]]))
    assert padded[0] == pytest.approx(psi(np.array([0.5, 0.5]), np.array([0.4, 0.6])), rel=0.01)


def test_numeric_bins_are_quantiles_with_open_outer_bins():
    values = np.arange(1000, dtype=float)
    profile = FeatureProfile.numeric_from("x", values)
    assert profile.n_bins == drift.BINS
    assert np.allclose(profile.reference, 1 / drift.BINS, atol=0.002)
    assert list(profile.bins([-1e9, 0, 999, 1e9])) == [0, 0, drift.BINS - 1, drift.BINS - 1]
    assert profile.bin_labels()[0].startswith("<") and profile.bin_labels()[-1].startswith(">=")


def test_discrete_numbers_get_one_bin_per_distinct_edge():
    profile = FeatureProfile.numeric_from("playoffs", np.array([0] * 85 + [1] * 15))
    assert profile.edges == (0.0, 1.0)
    assert profile.reference == pytest.approx((0.0, 0.85, 0.15))


def test_categories_keep_the_most_frequent_and_pool_the_rest_and_the_unseen():
    values = [f"c{i}" for i in range(12) for _ in range(20 - i)]
    profile = FeatureProfile.categorical_from("zone", values)
    assert profile.categories == tuple(f"c{i}" for i in range(drift.BINS - 2))
    assert profile.others == ("c8", "c9", "c10", "c11")  # ranked by count
    assert list(profile.bins(["c0", "c9", "never seen"])) == [0, drift.BINS - 2, drift.BINS - 1]
    assert profile.reference[-1] == 0.0  # no training row is unseen
    assert sum(profile.reference) == pytest.approx(1.0)


def kobe_frame(rows: int, seed: int, distance: tuple[int, int] = (0, 20)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = {}
    for feature in KOBE.categorical_features:
        frame[feature.name] = rng.choice(feature.categories[:5], rows)
    for feature in KOBE.numeric_features:
        frame[feature.name] = rng.integers(int(feature.minimum), int(feature.maximum) + 1, rows)
    frame["shot_distance"] = rng.integers(*distance, rows)
    return pd.DataFrame(frame)


def kobe_monitor(window: int) -> DriftMonitor:
    training = kobe_frame(3000, seed=0)
    probabilities = np.random.default_rng(0).dirichlet([1, 1], len(training))
    return DriftMonitor(KOBE, Profile.from_training(KOBE, training, probabilities), window)


def replay(monitor: DriftMonitor, frame: pd.DataFrame, part_rows: int = 7) -> None:
    records = frame.to_dict("records")
    probabilities = np.random.default_rng(1).dirichlet([1, 1], len(records))
    for start in range(0, len(records), part_rows):
        parts = [[r] for r in records[start:start + part_rows]]
        monitor.observe(parts, probabilities[start:start + part_rows])


def test_profile_survives_json_and_bins_the_same():
    training = kobe_frame(500, seed=0)
    profile = Profile.from_training(KOBE, training, np.random.default_rng(0).dirichlet([1, 1], 500))
    again = Profile.from_json(json.loads(json.dumps(profile.to_json())))
    assert again == profile
    assert [f.name for f in profile.features] == KOBE.feature_names
    with pytest.raises(RuntimeError, match="retrain it"):
        Profile.of_model("kobe:old", {"metrics": {}})


def test_no_verdict_before_the_minimum_sample():
    monitor = kobe_monitor(window=1000)
    replay(monitor, kobe_frame(MIN_ROWS - 1, seed=1, distance=(60, 90)))  # drifted, but too few rows
    report = monitor.report()
    assert report.window == MIN_ROWS - 1
    assert not report.drifted
    assert all(f.statistic is None and not f.drifted for f in report.features)


def test_same_distribution_is_not_drift_and_a_shifted_feature_is():
    monitor = kobe_monitor(window=400)
    replay(monitor, kobe_frame(400, seed=2))
    report = monitor.report()
    assert report.window == 400 and not report.drifted, report
    replay(monitor, kobe_frame(400, seed=3, distance=(22, 30)))  # the window now holds only these
    report = monitor.report()
    flagged = {f.name for f in report.features if f.drifted}
    assert report.drifted and flagged == {"shot_distance"}, report


def test_the_window_is_bounded_and_its_counts_match_its_rows():
    monitor = kobe_monitor(window=50)
    replay(monitor, kobe_frame(333, seed=4), part_rows=13)
    assert monitor.report().window == 50
    assert monitor._ring.shape == (50, len(KOBE.features) + 1)
    recounted = np.bincount((monitor._ring + monitor._offsets).ravel(), minlength=len(monitor._counts))
    np.testing.assert_array_equal(monitor._counts, recounted)
    last = kobe_frame(333, seed=4).tail(50)  # the ring holds exactly the 50 most recent rows
    expected = np.sort(monitor.profile.features[10].bins(list(last["shot_distance"])))
    np.testing.assert_array_equal(np.sort(monitor._ring[:, 10]), expected)


def test_a_batch_bigger_than_the_window_keeps_its_last_rows():
    monitor = kobe_monitor(window=10)
    bins = np.zeros((25, len(KOBE.features) + 1), dtype=np.int64)
    bins[-10:, 0] = 1
    monitor.add(bins[:3])
    monitor.add(bins)
    assert (monitor._ring[:, 0] == 1).all()
    recounted = np.bincount((monitor._ring + monitor._offsets).ravel(), minlength=len(monitor._counts))
    np.testing.assert_array_equal(monitor._counts, recounted)


def test_image_statistics_tell_inverted_images_apart():
    rng = np.random.default_rng(0)
    cells = (rng.random((600, 50, 50, 1)) ** 3).astype(np.float32)  # mostly dark, like cell images
    profile = Profile.from_training(MALARIA, cells[:300], rng.dirichlet([1, 1], 300))
    assert [f.name for f in profile.features] == list(drift.IMAGE_STATISTICS)
    monitor = DriftMonitor(MALARIA, profile, window=300)
    monitor.observe([cells[300:450], cells[450:]], rng.dirichlet([1, 1], 300))
    assert not monitor.report().drifted
    monitor.observe([1.0 - cells[300:]], rng.dirichlet([1, 1], 300))
    report = monitor.report()
    assert report.drifted and all(f.drifted for f in report.features if f.name != "image_std")


def test_a_failing_batch_is_logged_not_raised(caplog):
    monitor = kobe_monitor(window=10)
    monitor.observe([[{"loc_x": 1}]], np.array([[0.5, 0.5]]))  # a record without most features
    assert "drift monitor of kobe failed" in caplog.text
    assert monitor.report().window == 0


def test_published_statistics_are_nan_until_the_minimum_then_numbers():
    published = []
    training = pd.DataFrame(np.random.default_rng(0).random((300, 4)) * 5, columns=IRIS.feature_names)
    profile = Profile.from_training(IRIS, training, np.random.default_rng(0).dirichlet([1, 1, 1], 300))
    monitor = DriftMonitor(IRIS, profile, 1000, lambda *args: published.append(args))
    monitor.observe([training.to_dict("records")[:100]], np.eye(3)[np.zeros(100, int)])
    model, names, statistics, rows = published[-1]
    assert (model, names, rows) == ("iris", IRIS.feature_names, 100) and np.isnan(statistics).all()
    monitor.observe([training.to_dict("records")[100:]], np.eye(3)[np.zeros(200, int)])
    wait_for(lambda: published[-1][3] == 300)  # published once the interval is over
    _, _, statistics, rows = published[-1]
    assert rows == 300 and np.isfinite(statistics).all()
    assert statistics[-1] > PSI_THRESHOLD  # every prediction "setosa" vs a third in training


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not published in time"
        time.sleep(0.05)


def test_gauges_are_published_at_most_once_an_interval_and_the_last_batch_late(monkeypatch):
    monkeypatch.setattr(drift, "PUBLISH_INTERVAL_S", 3.0)  # room for 250 batches on a busy machine
    published = []
    training = pd.DataFrame(np.random.default_rng(0).random((300, 4)) * 5, columns=IRIS.feature_names)
    profile = Profile.from_training(IRIS, training, np.random.default_rng(0).dirichlet([1, 1, 1], 300))
    monitor = DriftMonitor(IRIS, profile, 1000, lambda *args: published.append(args[3]))
    records = training.to_dict("records")
    for row in records[:250]:  # 250 batches of one row, well within one interval
        monitor.observe([[row]], np.eye(3)[[0]])
    assert published == [0, 1]  # the series at creation, then the first batch at once
    wait_for(lambda: len(published) > 2)
    assert published == [0, 1, 250]


def test_drift_window_from_the_environment(monkeypatch):
    monkeypatch.setenv("DRIFT_WINDOW", "250")
    assert drift.configured_window() == 250
    monkeypatch.setenv("DRIFT_WINDOW", "0")
    assert drift.configured_window() == 0  # monitoring off
    for bad in ("-3", "many", "1.5"):
        monkeypatch.setenv("DRIFT_WINDOW", bad)
        with pytest.raises(ValueError, match="DRIFT_WINDOW"):
            drift.configured_window()


def test_the_report_shows_where_the_shares_moved():
    monitor = kobe_monitor(window=400)
    replay(monitor, kobe_frame(400, seed=3, distance=(22, 30)))
    report = monitor.report()
    distance = next(f for f in report.features if f.name == "shot_distance")
    assert [b.label for b in distance.bins] == monitor.profile.features[10].bin_labels()
    assert sum(b.reference for b in distance.bins) == pytest.approx(1.0)
    assert distance.bins[-1].recent == 1.0  # every recent shot beyond the training's top decile
    assert [b.label for b in report.prediction.bins] == list(KOBE.class_names)
    zone = next(f for f in report.features if f.name == "shot_zone_basic")
    assert [b.label for b in zone.bins][-2:] == [drift.OTHER, drift.UNSEEN]


def test_the_plot_draws_the_flagged_features(tmp_path):
    pytest.importorskip("matplotlib")
    from loadtests.drift_plot import plot

    monitor = kobe_monitor(window=400)
    replay(monitor, kobe_frame(400, seed=3, distance=(22, 30)))
    out = tmp_path / "drift.png"
    assert plot(monitor.report().model_dump(), out) == ["shot_distance"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_saved_before_profiles_existed_fail_the_fingerprint(monkeypatch):
    """Raising SERVING_ARTIFACTS_VERSION changes every fingerprint: the service refuses models
    stored without a drift profile ("retrain it") and `--only-missing` retrains them."""
    from service import specs

    current = {name: spec.fingerprint() for name, spec in specs.SPECS.items()}
    monkeypatch.setattr(specs, "SERVING_ARTIFACTS_VERSION", specs.SERVING_ARTIFACTS_VERSION - 1)
    assert all(spec.fingerprint() != current[name] for name, spec in specs.SPECS.items())
