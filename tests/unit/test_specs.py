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


def test_the_relative_gate_knows_which_way_is_better():
    by_accuracy = Gate(primary="accuracy", tolerance=0.01)
    assert by_accuracy.lost_by({"accuracy": 0.90}, {"accuracy": 0.95}) == pytest.approx(0.05)
    assert not by_accuracy.beats({"accuracy": 0.90}, {"accuracy": 0.95})
    assert by_accuracy.beats({"accuracy": 0.945}, {"accuracy": 0.95})  # within the tolerance
    assert by_accuracy.beats({"accuracy": 0.99}, {"accuracy": 0.95})
    by_loss = Gate(primary="log_loss", tolerance=0.002)
    assert by_loss.lost_by({"log_loss": 0.62}, {"log_loss": 0.60}) == pytest.approx(0.02)
    assert not by_loss.beats({"log_loss": 0.62}, {"log_loss": 0.60})
    assert by_loss.beats({"log_loss": 0.58}, {"log_loss": 0.60})
    assert all(spec.gate.primary in spec.gate.minimum or spec.gate.primary in spec.gate.maximum
               or spec.gate.primary == "log_loss" for spec in SPECS.values())


def test_a_gate_on_an_unmeasured_metric_is_refused():
    from dataclasses import replace

    with pytest.raises(ValueError, match="a gate compares on one of"):
        replace(KOBE, gate=Gate(primary="precision"))
    with pytest.raises(ValueError, match="a gate compares on one of"):
        replace(KOBE, gate=Gate(primary="accuracy", tolerance=-0.1))


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


@pytest.mark.parametrize(("change", "reason"), [
    ({"name": "Wine Quality"}, "the name must be"),
    ({"name": "x" * 41}, "the name must be"),
    ({"class_names": ("only",)}, "two or more distinct"),
    ({"class_names": ("a", "a")}, "two or more distinct"),
    ({"features": ()}, "a tabular model needs features"),
    ({"features": (NumericFeature("a", 0, 1), NumericFeature("a", 0, 1))}, "feature names must be distinct"),
    ({"features": (NumericFeature("input", 0, 1),)}, "name V2 tensors"),
    ({"features": (NumericFeature("a", 2, 1),)}, "minimum above maximum"),
    ({"features": (CategoricalFeature("a", ()),)}, "no categories"),
    ({"max_records_per_call": 0}, "must be positive"),
])
def test_a_spec_the_service_could_not_serve_is_refused_when_it_is_made(change, reason):
    from dataclasses import replace

    from service.specs import IRIS

    with pytest.raises(ValueError, match=reason):
        replace(IRIS, **change)


def test_an_image_spec_needs_its_geometry_and_pixel_features_that_fill_it():
    from dataclasses import replace

    from service.specs import DIGITS, MALARIA

    with pytest.raises(ValueError, match="image geometry"):
        replace(MALARIA, image=None)
    with pytest.raises(ValueError, match="height x width x channels"):
        replace(DIGITS, features=DIGITS.features[:10])


def test_two_specs_with_one_name_are_refused():
    from service.specs import IRIS, registry

    with pytest.raises(ValueError, match="share a name"):
        registry(IRIS, IRIS)


def test_routes_follow_from_the_specs():
    from service.routes import ROUTES, endpoints

    assert endpoints("iris") == ["/iris"]
    assert endpoints("digits") == ["/digits", "/digits/base64", "/digits/pixels"]
    assert endpoints("malaria") == ["/malaria", "/malaria/base64"]
    assert {route.spec.name for route in ROUTES} == set(SPECS)
    assert len({route.path for route in ROUTES}) == len(ROUTES)
    assert {route.media_type for route in ROUTES if route.kind == "upload"} == {"multipart/form-data"}


def test_a_route_that_would_replace_a_method_of_the_service_is_refused():
    from service.routes import add_typed_routes

    class Service:
        def iris(self) -> None: ...

    with pytest.raises(TypeError, match="route /iris of model 'iris'"):
        add_typed_routes(Service, lambda *args: None)  # type: ignore[arg-type, return-value]


def test_a_model_named_after_one_of_the_services_own_routes_is_refused(monkeypatch):
    from dataclasses import replace

    from service import routes
    from service.specs import IRIS

    monkeypatch.setattr(routes, "ROUTES", [routes.TypedRoute(replace(IRIS, name="models"), "records")])
    with pytest.raises(TypeError, match="would take the service's own /models"):
        routes.add_typed_routes(type("Service", (), {}), lambda *args: None)  # type: ignore[arg-type, return-value]


def test_every_spec_has_one_trainer_and_a_missing_one_is_named():
    from training.trainers import TRAINERS, IrisTrainer, registry

    assert set(TRAINERS) == set(SPECS)
    with pytest.raises(ValueError, match=r"no trainer for \['digits', 'kobe', 'malaria'\]"):
        registry(IrisTrainer())
