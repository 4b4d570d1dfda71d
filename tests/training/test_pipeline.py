"""Each trainer on a small real subset: the BentoML store, the MLflow run, the gate."""

import numpy as np
import pytest

from service.litert import LiteRTModel
from service.runtime import load
from service.specs import ARRAYS_MODEL_FILE, KERAS_MODEL_FILE, LITERT_MODEL_FILE, SPECS, Gate
from training.datasets import load_malaria
from training.pipeline import split, train_model
from training.trainers import TRAINERS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(SPECS))
def test_store_holds_the_model_with_what_serving_needs(quick_models, name):
    import bentoml

    result = quick_models[name]
    model = bentoml.models.get(result.tag)
    meta = model.info.metadata
    spec = SPECS[name]
    assert meta["mlflow_run_id"] == result.mlflow_run_id
    assert meta["class_names"] == list(spec.class_names)
    assert meta["spec_fingerprint"] == spec.fingerprint()
    assert meta["schema"] == spec.schema()
    assert meta["quick"] is True and model.info.labels["quick"] == "true"
    assert result.tag.startswith(f"{name}:quick-"), "`bentoml models list` must show a quick model as such"
    assert {"accuracy", "f1_macro", "log_loss", "roc_auc"} <= set(meta["metrics"])
    assert all(isinstance(v, float) for v in meta["metrics"].values())
    assert meta["metrics"]["accuracy"] == pytest.approx(result.metrics["accuracy"])
    if name == "kobe":
        assert {"accuracy", "log_loss", "roc_auc", "baseline_log_loss"} <= set(meta["prod_metrics"])


@pytest.mark.parametrize("name", list(SPECS))
def test_model_reloaded_from_the_store_predicts_identically(quick_models, settings, name):
    import bentoml

    trainer = TRAINERS[name]
    result = quick_models[name]
    _, _, test = split(trainer.load(settings, quick=True), settings.seed)
    stored = bentoml.models.get(result.tag)
    expected = trainer.predict_proba(result.fitted_model, test.features)
    if name == "malaria":  # served from the LiteRT file: what the service runs
        served = LiteRTModel(open(stored.path_of(LITERT_MODEL_FILE), "rb").read(), threads=2)
        got = served(test.features)
    else:
        got = trainer.predict_proba(bentoml.sklearn.load_model(stored), test.features)
        served = load(SPECS[name], stored, threads=1)  # the arrays: what the service runs
        rows = served.matrix(test.features) if served.matrix else np.asarray(test.features, np.float64)
        np.testing.assert_allclose(served.predict_proba(rows), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert expected.shape == (len(test), len(SPECS[name].class_names))


@pytest.mark.parametrize("name, kind", [("digits", "calibrated_rbf_svm"), ("iris", "softmax_linear"),
                                        ("kobe", "boosted_trees")])
def test_sklearn_models_store_their_pickle_and_arrays_that_passed_parity(quick_models, name, kind):
    import bentoml
    from mlflow import MlflowClient

    from service import arrays as served
    from training.arrays import EXPORTED_SKLEARN, PARITY_MAX_ABS_DIFF

    result = quick_models[name]
    stored = bentoml.models.get(result.tag)
    exported = stored.info.metadata["arrays"]
    assert exported["kind"] == kind and exported["exported_from"] == f"scikit-learn=={EXPORTED_SKLEARN}"
    assert exported["input"] == ("kobe_model_matrix" if name == "kobe" else "features")
    assert exported["parity_rows"] > 0 and 0 <= exported["parity_max_abs_diff"] <= PARITY_MAX_ABS_DIFF
    assert served.read(open(stored.path_of(ARRAYS_MODEL_FILE), "rb").read())[0] == kind
    assert stored.info.module == "bentoml.sklearn"  # the pickle, for bentoml.sklearn.load_model
    client = MlflowClient()
    assert {a.path for a in client.list_artifacts(result.mlflow_run_id, "serving")} == {f"serving/{ARRAYS_MODEL_FILE}"}
    assert client.get_run(result.mlflow_run_id).data.metrics["arrays_changed_labels"] == 0


def test_arrays_that_fail_their_parity_check_are_not_saved(quick_models, settings, monkeypatch):
    import bentoml

    from training import arrays

    stored = {str(m.tag) for m in bentoml.models.list("iris")}
    monkeypatch.setattr(arrays, "PARITY_MAX_ABS_DIFF", -1.0)  # no export can pass
    result = train_model("iris", settings, quick=True)
    assert not result.passed and result.tag is None
    assert any("the arrays: probabilities differ from scikit-learn's" in f for f in result.gate_failures)
    assert {str(m.tag) for m in bentoml.models.list("iris")} == stored


def test_malaria_stores_keras_and_a_litert_conversion_that_passed_its_parity_check(quick_models):
    import hashlib
    from importlib.metadata import version

    import bentoml
    from mlflow import MlflowClient

    from training.litert import PARITY_MAX_ABS_DIFF

    result = quick_models["malaria"]
    stored = bentoml.models.get(result.tag)
    litert = stored.info.metadata["litert"]
    for name, key in ((KERAS_MODEL_FILE, "keras_sha256"), (LITERT_MODEL_FILE, "litert_sha256")):
        assert hashlib.sha256(open(stored.path_of(name), "rb").read()).hexdigest() == litert[key]
    assert litert["runtime"] == f"ai-edge-litert=={version('ai-edge-litert')}"
    assert litert["converter"].startswith(f"tensorflow=={version('tensorflow-cpu')} ")
    assert litert["parity_images"] > 0 and 0 <= litert["parity_max_abs_diff"] <= PARITY_MAX_ABS_DIFF
    client = MlflowClient()
    assert {a.path for a in client.list_artifacts(result.mlflow_run_id, "serving")} == {
        f"serving/{KERAS_MODEL_FILE}", f"serving/{LITERT_MODEL_FILE}"}
    metrics = client.get_run(result.mlflow_run_id).data.metrics
    assert metrics["litert_changed_labels"] == 0
    assert metrics["litert_max_abs_diff"] == pytest.approx(litert["parity_max_abs_diff"])


def test_stored_keras_and_litert_files_agree_on_real_held_out_cells(quick_models, settings):
    """The two files of the stored model, not the in-memory one: what a user would audit."""
    import bentoml
    import keras

    _, _, test = split(TRAINERS["malaria"].load(settings, quick=True), settings.seed)
    stored = bentoml.models.get(quick_models["malaria"].tag)
    from_keras = np.asarray(keras.models.load_model(stored.path_of(KERAS_MODEL_FILE)).predict(test.features, verbose=0))
    from_litert = LiteRTModel(open(stored.path_of(LITERT_MODEL_FILE), "rb").read(), threads=2)(test.features)
    assert len(test) >= 100
    assert (from_litert.argmax(axis=1) == from_keras.argmax(axis=1)).all()
    assert np.abs(from_litert - from_keras).max() <= 1e-5


def test_a_conversion_that_fails_its_parity_check_is_not_saved(quick_models, settings, monkeypatch):
    import bentoml

    from training import litert

    stored = {str(m.tag) for m in bentoml.models.list("malaria")}
    monkeypatch.setattr(litert, "PARITY_MAX_ABS_DIFF", -1.0)  # no conversion can pass
    result = train_model("malaria", settings, quick=True)
    assert not result.passed and result.tag is None
    assert any("LiteRT: probabilities differ from Keras's" in f for f in result.gate_failures), result.gate_failures
    assert {str(m.tag) for m in bentoml.models.list("malaria")} == stored


@pytest.mark.parametrize("name", list(SPECS))
def test_mlflow_run_holds_params_metrics_and_artifacts_and_a_quick_model_is_not_registered(quick_models, name):
    from mlflow import MlflowClient

    result = quick_models[name]
    client = MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert run.data.params["quick"] == "True"
    assert run.data.tags["gate"] == "passed"
    assert run.data.tags["bentoml_tag"] == result.tag
    assert len(run.data.tags["dataset_fingerprint"]) == 16
    assert run.data.tags["code_version"]
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id, "evaluation")}
    for suffix in ("confusion_matrix.png", "roc.png", "classification_report.txt", "metrics.csv"):
        assert f"evaluation/test_{suffix}" in artifacts
    versions = client.search_model_versions(f"name='{name}'")
    assert result.mlflow_run_id not in {v.run_id for v in versions}, "a smoke run is no production candidate"
    if name == "kobe":
        assert "prod_log_loss" in run.data.metrics
        assert "evaluation/prod_roc.png" in artifacts


def test_malaria_logs_per_epoch_history(quick_models):
    from mlflow import MlflowClient

    history = MlflowClient().get_metric_history(quick_models["malaria"].mlflow_run_id, "epoch_val_loss")
    assert [m.step for m in history] == list(range(len(history))) and len(history) >= 2


def test_model_failing_its_gate_does_not_replace_the_served_one(quick_models, settings):
    import bentoml
    from mlflow import MlflowClient

    stored = {str(m.tag) for m in bentoml.models.list("iris")}
    result = train_model("iris", settings, quick=True, gate=Gate(minimum={"accuracy": 1.01}))
    assert not result.passed and result.tag is None
    assert "accuracy" in result.gate_failures[0]
    assert {str(m.tag) for m in bentoml.models.list("iris")} == stored
    run = MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.tags["gate"] == "failed" and "bentoml_tag" not in run.data.tags


def test_corrupt_and_non_image_files_are_skipped_and_counted(malaria_image_paths, settings, tmp_path):
    root = tmp_path / "malaria" / "cell_images"
    for class_name, paths in malaria_image_paths.items():
        (root / class_name).mkdir(parents=True)
        for path in paths:
            (root / class_name / path.name).write_bytes(path.read_bytes())
    good = malaria_image_paths["Parasitized"][0].read_bytes()
    (root / "Parasitized" / "truncated.png").write_bytes(good[: len(good) // 3])
    (root / "Uninfected" / "Thumbs.db").write_bytes(b"\x00\x01 not an image")

    data = load_malaria(tmp_path)
    assert len(data) == sum(len(p) for p in malaria_image_paths.values())
    assert sorted(data.skipped_files) == ["Parasitized/truncated.png", "Uninfected/Thumbs.db"]

    from dataclasses import replace

    from mlflow import MlflowClient

    result = train_model("malaria", replace(settings, data_dir=tmp_path), quick=True,
                         gate=Gate(minimum={"accuracy": 2.0}))  # never saved: keep the store clean
    assert result.skipped_files == 2
    run = MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.params["skipped_files"] == "2"


def test_a_candidate_worse_than_the_champion_is_refused_unless_overridden(quick_models, settings, monkeypatch):
    """The relative gate: same test rows, the spec's primary metric and tolerance; refused
    candidates are not stored; --accept-worse saves one (as the challenger, never served
    unpromoted) and says so; quick runs never compete."""
    import bentoml
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from service.versions import champion

    good = train_model("iris", settings)  # the champion, or a challenger as good as it
    assert good.passed and good.role in ("champion", "challenger"), good.gate_failures
    served = champion("iris")
    assert served is not None and served.info.labels["role"] == "champion"
    stored = {str(m.tag) for m in bentoml.models.list("iris")}

    weak = [Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(C=0.001, max_iter=1000))])]
    monkeypatch.setattr(TRAINERS["iris"], "candidates", lambda quick, seed: weak)
    lenient = Gate(minimum={"accuracy": 0.5}, primary="log_loss", tolerance=0.02)  # only the relative gate bites
    refused = train_model("iris", settings, gate=lenient)
    assert not refused.passed and refused.tag is None
    assert any(f"worse than the champion {served.tag} on log_loss by" in f for f in refused.gate_failures)
    assert {str(m.tag) for m in bentoml.models.list("iris")} == stored
    client = MlflowClient()
    run = client.get_run(refused.mlflow_run_id)
    assert run.data.tags["relative_gate"] == "failed" and run.data.tags["compared_with"] == str(served.tag)
    assert run.data.metrics["champion_log_loss"] == pytest.approx(served.info.metadata["metrics"]["log_loss"])
    assert refused.mlflow_run_id not in {v.run_id for v in client.search_model_versions("name='iris'")}

    forced = train_model("iris", settings, gate=lenient, accept_worse=True)
    assert forced.passed and forced.tag and forced.role == "challenger"
    comparison = bentoml.models.get(forced.tag).info.metadata["comparison"]
    assert comparison["override"] is True and comparison["champion"] == str(served.tag)
    assert comparison["lost_by"] > 0.02 and comparison["metric"] == "log_loss"
    assert client.get_run(forced.mlflow_run_id).data.tags["relative_gate"] == "overridden"
    assert champion("iris").tag == served.tag, "an accepted candidate is only the challenger"

    smoke = train_model("iris", settings, quick=True, gate=lenient)
    assert smoke.passed and "relative_gate" not in client.get_run(smoke.mlflow_run_id).data.tags
