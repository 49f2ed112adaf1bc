"""The thread rule (assistant.threads): a pure function of model size, usable CPUs and explicit settings."""

from __future__ import annotations

import os

import pytest

from assistant.threads import (
    SMALL_MODEL_PARAMS,
    choose_threads,
    choose_workers,
    cpu_quota,
    cpu_times,
    env_threads,
    idle_cpus,
    usable_cpus,
)


@pytest.mark.parametrize(
    ("affinity", "quota", "expected"),
    [
        ({0, 1}, None, 2),
        (set(range(16)), None, 16),
        (set(range(16)), 2.0, 2),  # a cgroup quota of 2 CPUs on a 16-core host
        (set(range(16)), 1.5, 2),  # a fractional quota rounds up
        (set(range(16)), 0.25, 1),
        ({3}, 8.0, 1),  # pinned to one core: the quota cannot add cores
    ],
)
def test_usable_cpus_respects_affinity_and_quota(affinity, quota, expected):
    assert usable_cpus(affinity, quota) == expected


def test_small_models_get_one_thread_whatever_the_cpus():
    for cpus in (1, 2, 16, 64):
        choice = choose_threads(3_000_000, cpus=cpus, env={})
        assert choice.threads == 1 and "3.0M-parameter" in choice.reason


def test_large_models_get_every_usable_cpu():
    assert choose_threads(SMALL_MODEL_PARAMS, cpus=12, env={}).threads == 12
    assert choose_threads(7_000_000_000, cpus=2, env={}).threads == 2


def test_explicit_settings_win_in_order():
    assert choose_threads(3_000_000, requested=4, cpus=2, env={"OMP_NUM_THREADS": "3"}).threads == 4
    assert choose_threads(3_000_000, cpus=2, env={"OMP_NUM_THREADS": "3"}).threads == 3
    assert choose_threads(7_000_000_000, cpus=8, env={"OMP_NUM_THREADS": ""}).threads == 8  # empty: unset
    with pytest.raises(ValueError, match="threads must be >= 0"):
        choose_threads(1, requested=-1)


def test_cgroup_quota_v2_v1_and_none(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(v1) == 2.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(v1) is None
    assert cpu_quota(tmp_path / "absent") is None
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cpu_quota(tmp_path) is None


def test_ocr_engine_takes_omp_num_threads_as_onnxruntime_does_not(monkeypatch):
    from assistant.ocr.engines import RapidOCREngine

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert (
        env_threads() == 1 and RapidOCREngine().threads == 1
    )  # a one-thread recipe job keeps OCR on one core
    assert RapidOCREngine(threads=3).threads == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert env_threads() is None and RapidOCREngine().threads == -1  # onnxruntime's own default
    assert env_threads({"OMP_NUM_THREADS": "0"}) is None and env_threads({"OMP_NUM_THREADS": "x"}) is None


@pytest.mark.parametrize(
    ("idle", "cpus", "expected"),
    [
        (2.0, 2, 2),  # an idle 2-core machine: training batches split well over both
        (1.85, 2, 2),  # a little background noise still leaves the second core
        (1.0, 2, 1),  # another job holds a core: a second thread would wait for it at every operator
        (0.1, 2, 1),
        (7.9, 8, 8),
        (5.0, 8, 5),
        (16.0, 4, 4),  # never more than the usable CPUs (affinity, quota)
    ],
)
def test_training_a_small_model_takes_the_idle_cpus(idle, cpus, expected):
    choice = choose_threads(3_000_000, cpus=cpus, env={}, training=True, idle=idle)
    assert choice.threads == expected and "idle" in choice.reason


def test_training_rule_leaves_serving_explicit_settings_and_large_models_alone():
    assert choose_threads(3_000_000, cpus=2, env={}, idle=2.0).threads == 1  # serving: one thread
    assert (
        choose_threads(3_000_000, cpus=2, env={"OMP_NUM_THREADS": "1"}, training=True, idle=2.0).threads == 1
    )
    assert choose_threads(3_000_000, requested=1, cpus=2, env={}, training=True, idle=2.0).threads == 1
    assert choose_threads(7_000_000_000, cpus=8, env={}, training=True, idle=0.5).threads == 8
    assert choose_threads(3_000_000, cpus=1, env={}, training=True, idle=1.0).threads == 1


def test_workers_for_work_split_by_item_take_the_idle_cpus_unless_told():
    assert choose_workers(cpus=2, env={}, idle=2.0).threads == 2
    assert choose_workers(cpus=2, env={}, idle=1.0).threads == 1  # another job holds a core
    assert choose_workers(cpus=8, env={}, idle=5.0).threads == 5
    assert choose_workers(cpus=1, env={}, idle=1.0).threads == 1
    assert (
        choose_workers(cpus=2, env={"OMP_NUM_THREADS": "1"}, idle=2.0).threads == 1
    )  # a job held to one thread
    assert choose_workers(3, cpus=2, env={"OMP_NUM_THREADS": "1"}, idle=0.0).threads == 3  # explicit wins
    with pytest.raises(ValueError, match="workers must be >= 0"):
        choose_workers(-1)


def test_cpu_times_reads_the_aggregate_line_and_idle_cpus_measures_this_machine():
    stat = "cpu  100 5 50 800 40 0 5 0 0 0\ncpu0 50 2 25 400 20 0 3 0 0 0\n"
    assert cpu_times(stat) == (840.0, 1000.0)  # idle + iowait, the first eight fields
    with pytest.raises(ValueError, match="no aggregate"):
        cpu_times("intr 1 2 3\n")
    idle = idle_cpus(0.05)
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1) + 1e-6
