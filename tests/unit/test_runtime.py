"""Thread settings follow the container's CPU limit, whichever cgroup version the node runs."""

import os

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
