"""Make one dataset: seeds -> scenes -> task records -> files. What the CLI calls.

Seeds at or above `EVAL_SEED_BASE` are reserved for evaluation sets, so no training set can
contain an evaluation image: a training run of n scenes from `seed` must end below it, and an
evaluation run's seed is an offset into the reserved range.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from .generate import generate_scene
from .scene import Scene, get_preset
from .tasks import build_records, get_task
from .writers import write_dataset

log = logging.getLogger(__name__)

EVAL_SEED_BASE = 1_000_000_000


def first_seed(seed: int, n: int, eval_split: bool) -> int:
    """The first scene seed of a run of `n` scenes; refuses training runs that touch eval seeds."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if eval_split:
        return EVAL_SEED_BASE + seed
    if seed + n > EVAL_SEED_BASE:
        raise ValueError(
            f"seeds {seed}..{seed + n - 1} reach the evaluation range (>= {EVAL_SEED_BASE}); "
            "use a smaller seed for training data, or pass --eval to make an evaluation set"
        )
    return seed


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty directory unless `overwrite` and it holds a previous toy-world dataset."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ValueError(f"output directory {out} is not empty; choose a new --out or pass --overwrite")
    if not (out / "manifest.json").is_file():
        raise ValueError(f"refusing to overwrite {out}: it is not a toy-world dataset (no manifest.json)")
    shutil.rmtree(out)


def make_dataset(
    out: Path,
    *,
    task: str,
    n: int,
    seed: int,
    preset: str = "tiny",
    eval_split: bool = False,
    overwrite: bool = False,
    progress: Callable[[Iterable[Scene]], Iterable[Scene]] = iter,
    workers: int = 1,
) -> Path:
    """Generate `n` scenes from `seed` (offset into the eval range with `eval_split`), build the
    task's records and write everything under `out`, the images rendered over `workers` processes (the same
    bytes whatever their number). Returns `out`."""
    spec = get_task(task)
    config = get_preset(preset)
    start = first_seed(seed, n, eval_split)
    prepare_out(out, overwrite)
    scenes = [generate_scene(s, config) for s in range(start, start + n)]
    records = build_records(task, scenes, start)
    log.info("task %s: %d scenes (seeds %d..%d), %d records", task, n, start, start + n - 1, len(records))
    return write_dataset(
        out,
        task=task,
        fmt=spec.format,
        scenes=scenes,
        records=records,
        seed=seed,
        preset=preset,
        config=config,
        eval_split=eval_split,
        progress=progress,
        workers=workers,
    )
