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
