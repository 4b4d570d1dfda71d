"""Thread settings follow the container's CPU limit, whichever cgroup version the node runs."""

import os

import numpy as np

from service.runtime import cpu_count
from service.versions import served_tag

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


def test_array_models_run_single_threaded_in_every_thread_that_calls_them(quick_models):
    """BLAS (the digits kernel's matrix product) runs one thread in the model's own thread."""
    import threading

    import bentoml
    from threadpoolctl import threadpool_info

    from service.runtime import load, warm_up
    from service.specs import DIGITS

    model = load(DIGITS, bentoml.models.get(served_tag("digits")), threads=2)
    assert model.framework == "arrays"
    seen: dict[str, int] = {}

    def call() -> None:
        warm_up(model)  # one real prediction
        seen.update({info["user_api"]: info["num_threads"] for info in threadpool_info()})

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert seen.get("blas") == 1, seen


def test_a_stored_model_without_its_litert_file_is_refused_with_what_to_do(tmp_path):
    """A Keras-only folder (saved before the service ran LiteRT) never reaches TensorFlow."""
    from types import SimpleNamespace

    import pytest

    from service.runtime import load
    from service.specs import KERAS_MODEL_FILE, MALARIA

    (tmp_path / KERAS_MODEL_FILE).write_bytes(b"a keras zip")
    stored = SimpleNamespace(tag="malaria:old", path=str(tmp_path), path_of=lambda name: str(tmp_path / name),
                             info=SimpleNamespace(metadata={"spec_fingerprint": MALARIA.fingerprint()}))
    with pytest.raises(RuntimeError, match=r"malaria:old has neither model.tflite nor model.npz .*retrain it"):
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
    from service.schemas import RECORD_MODELS
    from service.specs import KOBE

    raw = pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_prod.parquet").head(300)
    records = [RECORD_MODELS["kobe"].model_validate(row).model_dump() for row in raw.to_dict("records")]
    stored = bentoml.models.get(served_tag("kobe"))
    served = load(KOBE, stored, threads=1)
    batch = served.combine([records[:100], records[100:]])
    assert not isinstance(batch, pd.DataFrame)
    pipeline = bentoml.sklearn.load_model(stored)
    expected = pipeline.predict_proba(typed_frame(pd.DataFrame(records), KOBE))
    np.testing.assert_allclose(served.predict_proba(batch), expected, rtol=0, atol=1e-15)


def test_arrays_for_another_input_are_refused(quick_models):
    """Arrays exported for a model matrix are only run on that matrix, and vice versa."""
    from types import SimpleNamespace

    import bentoml
    import pytest

    from service.runtime import load
    from service.specs import KOBE

    stored = bentoml.models.get(served_tag("kobe"))
    metadata = dict(stored.info.metadata)
    assert metadata["arrays"]["input"] == "kobe_model_matrix"
    metadata["arrays"] = {**metadata["arrays"], "input": "features"}
    other = SimpleNamespace(tag=stored.tag, path=stored.path, path_of=stored.path_of,
                            info=SimpleNamespace(metadata=metadata))
    with pytest.raises(RuntimeError, match="takes features where the service gives it kobe_model_matrix: retrain"):
        load(KOBE, other, threads=1)
