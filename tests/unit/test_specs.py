"""The model specs: consistent, serialisable, and true to the real data."""

import json

import pandas as pd
import pytest

from service.specs import KOBE, SPECS, CategoricalFeature, Gate, NumericFeature, get_spec


def test_every_spec_has_a_schema_that_is_plain_json():
    for spec in SPECS.values():
        schema = spec.schema()
        assert json.loads(json.dumps(schema)) == schema
        assert schema["class_names"] == list(spec.class_names)
        assert (spec.image is not None) == ("image" in schema)
        assert len(spec.fingerprint()) == 16


def test_fingerprint_changes_with_the_schema():
    from dataclasses import replace

    changed = replace(KOBE, class_names=("no", "yes"))
    assert changed.fingerprint() != KOBE.fingerprint()
    assert replace(KOBE).fingerprint() == KOBE.fingerprint()


def test_specs_are_either_tabular_or_image_and_well_formed():
    for spec in SPECS.values():
        assert spec.features or spec.image, spec.name
        names = spec.feature_names
        assert len(names) == len(set(names)), f"{spec.name}: duplicate feature names"
        for feature in spec.numeric_features:
            assert feature.minimum < feature.maximum
        for feature in spec.categorical_features:
            assert len(feature.categories) == len(set(feature.categories))


def test_gate_reports_each_missed_threshold():
    gate = Gate(minimum={"accuracy": 0.9, "roc_auc": 0.7}, maximum={"log_loss": 0.6})
    assert gate.failures({"accuracy": 0.95, "roc_auc": 0.75, "log_loss": 0.5}) == []
    failures = gate.failures({"accuracy": 0.85, "roc_auc": 0.75, "log_loss": 0.65})
    assert len(failures) == 2
    assert any("accuracy" in f for f in failures) and any("log_loss" in f for f in failures)
    assert gate.failures({"accuracy": float("nan"), "roc_auc": 0.8, "log_loss": 0.1})
    assert len(gate.failures({})) == 3


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="digits"):
        get_spec("resnet")


@pytest.mark.parametrize("file", ["dataset_kobe_dev.parquet", "dataset_kobe_prod.parquet"])
def test_kobe_spec_covers_every_value_in_the_real_data(settings, file):
    """Every Kaggle row must be servable: all categories listed, all numbers in range."""
    frame = pd.read_parquet(settings.data_dir / "kobe" / file)
    for feature in KOBE.features:
        column = frame[feature.name]
        if isinstance(feature, CategoricalFeature):
            unknown = set(column.unique()) - set(feature.categories)
            assert not unknown, f"{feature.name}: {unknown}"
        else:
            assert isinstance(feature, NumericFeature)
            assert column.min() >= feature.minimum and column.max() <= feature.maximum, feature.name
