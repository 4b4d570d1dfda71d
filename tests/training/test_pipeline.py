"""Each trainer on a small real subset: the BentoML store, the MLflow run, the gate."""

import numpy as np
import pytest

from service.specs import KERAS_MODEL_FILE, SPECS, Gate
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
    if name == "malaria":
        import keras

        reloaded = keras.models.load_model(stored.path_of(KERAS_MODEL_FILE))
    else:
        reloaded = bentoml.sklearn.load_model(stored)
    expected = trainer.predict_proba(result.fitted_model, test.features)
    np.testing.assert_allclose(trainer.predict_proba(reloaded, test.features), expected, rtol=1e-5, atol=1e-6)
    assert expected.shape == (len(test), len(SPECS[name].class_names))


@pytest.mark.parametrize("name", list(SPECS))
def test_mlflow_run_holds_params_metrics_artifacts_and_registered_model(quick_models, name):
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
    assert result.mlflow_run_id in {v.run_id for v in versions}
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

    served = bentoml.models.get("iris:latest").tag
    result = train_model("iris", settings, quick=True, gate=Gate(minimum={"accuracy": 1.01}))
    assert not result.passed and result.tag is None
    assert "accuracy" in result.gate_failures[0]
    assert bentoml.models.get("iris:latest").tag == served
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
