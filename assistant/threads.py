"""How many torch threads a CPU process should use: a rule, not torch's default.

torch starts one thread per core it sees. For the embedded model (a few million parameters) the work of one
operator is too small to split, and a second thread only adds a barrier at every operator: on an idle 2-core
machine 1 and 2 threads answer alike, and with the second core busy with anything else the 2-thread process waits
for it at every barrier (issue 18 measured 24x slower answers; benchmarks/RESULTS.md has the figures). So:

    threads = 1                                   for a model under SMALL_MODEL_PARAMS parameters
    threads = the CPUs idle when training starts  for such a model in training (batches of 16 conversations split
                                                  well: 1.78x on 2 idle cores, 1.5x slower if the other
                                                  core is busy, so only idle cores are taken)
    threads = the CPUs this process may use       otherwise: its affinity set, cut to its cgroup CPU quota

    choose_threads(params=3_000_000)              # -> ThreadChoice(threads=1, reason="...")
    apply_threads(requested=0, params=n)          # sets torch's threads, returns the choice (0: the rule)
    choose_workers()                              # processes for work split by item (OCR hints): idle CPUs

An explicit setting (flag, ASSISTANT_THREADS, OMP_NUM_THREADS) always wins.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Below this, one thread: the embedded model (~3 M) gains nothing from a second (RESULTS.md, "threads").
SMALL_MODEL_PARAMS = 50_000_000
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} ({self.reason})"


def cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs this process's cgroup may use (`cpu.max` of cgroup v2, `cpu.cfs_quota_us` of v1); None: no quota."""
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, period = (v2.read_text().split() + ["100000"])[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):  # unreadable or odd: no quota known
        return None
    return None


def usable_cpus(affinity: set[int] | None = None, quota: float | None = None) -> int:
    """CPUs this process may run on: its affinity set, cut to a cgroup CPU quota (rounded up, at least 1)."""
    if affinity is None:
        affinity = (
            os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        )
    n = max(1, len(affinity))
    if quota is not None and quota > 0:
        n = min(n, max(1, math.ceil(quota)))
    return n


def env_threads(env: dict[str, str] | None = None) -> int | None:
    """OMP_NUM_THREADS when it is a positive integer, else None. torch honours it by itself; other runtimes
    (onnxruntime, for OCR) are told it through this."""
    env = os.environ if env is None else env
    omp = env.get("OMP_NUM_THREADS", "").strip()
    return int(omp) if omp.isdigit() and int(omp) > 0 else None


def cpu_times(stat_text: str) -> tuple[float, float]:
    """(idle, total) jiffies of every CPU together, from the text of /proc/stat (its first `cpu ` line)."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            fields = [float(x) for x in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
            return fields[3] + fields[4], sum(fields)
    raise ValueError("no aggregate 'cpu ' line in /proc/stat")


def idle_cpus(seconds: float = 0.5, stat: Path = Path("/proc/stat")) -> float | None:
    """How many CPUs other processes leave idle, measured over `seconds` (this process sleeps meanwhile); None
    where /proc/stat cannot be read (not Linux)."""
    try:
        idle0, total0 = cpu_times(stat.read_text())
        time.sleep(seconds)
        idle1, total1 = cpu_times(stat.read_text())
    except (OSError, ValueError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)


def idle_share(cpus: int, idle: float) -> int:
    """CPUs to take when `idle` of `cpus` are idle: the whole ones, a CPU 80% idle counted as one (at least 1)."""
    return max(1, min(cpus, math.floor(idle + 0.2)))


def _explicit(requested: int, env: dict[str, str] | None, what: str) -> ThreadChoice | None:
    """An explicit setting: `requested` > 0, then OMP_NUM_THREADS in `env`; None where neither is set."""
    if requested < 0:
        raise ValueError(f"{what} must be >= 0 (0: choose by the rule), got {requested}")
    if requested:
        return ThreadChoice(requested, "set explicitly")
    omp = env_threads(env)
    return ThreadChoice(omp, "OMP_NUM_THREADS") if omp else None


def choose_workers(
    requested: int = 0, cpus: int | None = None, env: dict[str, str] | None = None, idle: float | None = None
) -> ThreadChoice:
    """Processes for CPU work that splits by item (OCR hints over a dataset's images), each single-threaded:
    `requested` > 0 wins, then OMP_NUM_THREADS (a job held to N threads runs N processes), then the CPUs that other
    processes leave idle now (`idle` defaults to idle_cpus()), as for training."""
    explicit = _explicit(requested, env, "workers")
    if explicit:
        return explicit
    if cpus is None:
        cpus = usable_cpus(quota=cpu_quota())
    if cpus <= 1:
        return ThreadChoice(1, "one CPU usable")
    idle = idle_cpus() if idle is None else idle
    if idle is None:
        return ThreadChoice(1, "idle CPUs unknown (no /proc/stat)")
    return ThreadChoice(idle_share(cpus, idle), f"{idle:.1f} of {cpus} CPUs idle")


def choose_threads(
    params: int,
    requested: int = 0,
    cpus: int | None = None,
    env: dict[str, str] | None = None,
    training: bool = False,
    idle: float | None = None,
) -> ThreadChoice:
    """The rule above. `requested` > 0 wins, then OMP_NUM_THREADS in `env`; `cpus` defaults to usable_cpus(), and
    for a small model in `training`, `idle` (CPUs left idle by other processes) to idle_cpus()."""
    explicit = _explicit(requested, env, "threads")
    if explicit:
        return explicit
    if cpus is None:
        cpus = usable_cpus(quota=cpu_quota())
    if params < SMALL_MODEL_PARAMS and training and cpus > 1:
        idle = idle_cpus() if idle is None else idle
        if idle is not None:
            return ThreadChoice(
                idle_share(cpus, idle),
                f"training a {params / 1e6:.1f}M-parameter model: {idle:.1f} of {cpus} CPUs idle",
            )
    if params < SMALL_MODEL_PARAMS:
        return ThreadChoice(
            1, f"{params / 1e6:.1f}M-parameter model: a second thread only waits ({cpus} CPUs usable)"
        )
    return ThreadChoice(cpus, f"{params / 1e6:.0f}M-parameter model: every usable CPU")


def apply_threads(params: int, requested: int = 0, training: bool = False) -> ThreadChoice:
    """choose_threads, then torch.set_num_threads; logged."""
    import torch

    choice = choose_threads(params, requested, training=training)
    torch.set_num_threads(choice.threads)
    log.info("torch threads: %s", choice)
    return choice
