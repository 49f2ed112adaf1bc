"""The thread rule (assistant.threads): a pure function of model size, usable CPUs and explicit settings."""

from __future__ import annotations

import pytest

from assistant.threads import SMALL_MODEL_PARAMS, choose_threads, cpu_quota, env_threads, usable_cpus


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
