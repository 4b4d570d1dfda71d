"""Thread settings follow the container's CPU limit, whichever cgroup version the node runs."""

import os

import numpy as np

from service.runtime import cpu_count

CPUS = len(os.sched_getaffinity(0))


def test_cgroup_v2_limit(tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert cpu_count(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_count(tmp_path) == CPUS


def test_cgroup_v1_limit(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")  # 1.5 CPUs: one thread
    assert cpu_count(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_count(tmp_path) == CPUS


def test_no_cgroup_files_and_limits_above_the_machine_give_the_affinity_mask(tmp_path):
    assert cpu_count(tmp_path) == CPUS
    (tmp_path / "cpu.max").write_text(f"{(CPUS + 4) * 100000} 100000\n")
    assert cpu_count(tmp_path) == CPUS


def test_sklearn_models_run_single_threaded_in_every_thread_that_calls_them(quick_models):
    """OpenMP's thread count belongs to the calling thread: the model's own thread included."""
    import threading

    import bentoml
    from threadpoolctl import threadpool_info

    from service.runtime import load, warm_up
    from service.specs import KOBE

    model = load(KOBE, bentoml.models.get("kobe:latest"), threads=2)
    seen: dict[str, int] = {}

    def call() -> None:
        warm_up(model)  # one real prediction
        seen.update({info["user_api"]: info["num_threads"] for info in threadpool_info()})

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert seen.get("openmp") == 1, seen


def test_a_stored_model_without_its_litert_file_is_refused_with_what_to_do(tmp_path):
    """A Keras-only folder (saved before the service ran LiteRT) never reaches TensorFlow."""
    from types import SimpleNamespace

    import pytest

    from service.runtime import load
    from service.specs import KERAS_MODEL_FILE, MALARIA

    (tmp_path / KERAS_MODEL_FILE).write_bytes(b"a keras zip")
    stored = SimpleNamespace(tag="malaria:old", path=str(tmp_path), path_of=lambda name: str(tmp_path / name),
                             info=SimpleNamespace(metadata={"spec_fingerprint": MALARIA.fingerprint()}))
    with pytest.raises(RuntimeError, match=r"malaria:old has no model.tflite .*retrain it"):
        load(MALARIA, stored, threads=1)
    stored.info.metadata["spec_fingerprint"] = "from an older spec"
    with pytest.raises(RuntimeError, match="trained for a different malaria input schema"):
        load(MALARIA, stored, threads=1)


def test_kobe_is_served_from_its_records_without_pandas_and_matches_the_stored_pipeline(quick_models, settings):
    """Serving builds kobe's matrix from the records and runs the trees on it: the same
    probabilities as the whole stored pipeline (matrix step included) on the typed frame."""
    import bentoml
    import pandas as pd

    from service.preprocessing import typed_frame
    from service.runtime import load
    from service.schemas import KobeRecord
    from service.specs import KOBE

    raw = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").head(300)
    records = [KobeRecord.model_validate(row).model_dump() for row in raw.to_dict("records")]
    stored = bentoml.models.get("kobe:latest")
    served = load(KOBE, stored, threads=1)
    batch = served.combine([records[:100], records[100:]])
    assert not isinstance(batch, pd.DataFrame)
    pipeline = bentoml.sklearn.load_model(stored)
    expected = pipeline.predict_proba(typed_frame(pd.DataFrame(records), KOBE))
    np.testing.assert_array_equal(served.predict_proba(batch), expected)


def test_a_kobe_pipeline_without_the_matrix_step_is_refused():
    import pytest
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from service.preprocessing import kobe_model_matrix
    from service.runtime import _after_matrix_step

    other = Pipeline([("features", FunctionTransformer(lambda frame: frame)), ("identity", FunctionTransformer())])
    with pytest.raises(RuntimeError, match="does not start with kobe_model_matrix: retrain it"):
        _after_matrix_step(other, kobe_model_matrix, "kobe:old")
    ours = Pipeline([("features", FunctionTransformer(kobe_model_matrix)), ("identity", FunctionTransformer())])
    assert _after_matrix_step(ours, kobe_model_matrix, "kobe:new") is ours.steps[1][1]


def test_folded_category_encoder_treats_unknown_and_missing_codes_as_the_encoder_does(quick_models, settings):
    import bentoml
    import pandas as pd

    from service.preprocessing import kobe_model_matrix
    from service.trees import fold_category_encoder

    trees = bentoml.sklearn.load_model(bentoml.models.get("kobe:latest")).steps[-1][1]
    matrix = kobe_model_matrix(pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet").head(200))
    categorical = int(trees.is_categorical_.sum())
    rng = np.random.default_rng(0)
    odd = matrix.copy()
    odd[:, :categorical] = rng.choice([-1.0, np.nan, 0.5, 999.0, 0.0, 1.0], size=(len(odd), categorical))
    bare, encode = fold_category_encoder(trees)
    for rows in (matrix, odd, matrix[:1]):
        np.testing.assert_array_equal(bare.predict_proba(encode(rows)), trees.predict_proba(rows))
    assert trees._preprocessor is not None, "the stored estimator itself is left as it was"


def test_the_encoder_is_kept_on_another_scikit_learn(quick_models, monkeypatch):
    import bentoml
    import sklearn

    from service.trees import fold_category_encoder

    trees = bentoml.sklearn.load_model(bentoml.models.get("kobe:latest")).steps[-1][1]
    monkeypatch.setattr(sklearn, "__version__", "1.10.0")
    assert fold_category_encoder(trees) is None
