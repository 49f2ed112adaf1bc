"""A training stage in one process of two threads (the recipe before session 53) against two processes of one
thread each (`python -m training.recipe --processes 2`: `accelerate launch` over gloo, each process half of every
batch), on the same start model, data and settings.

    python -m benchmarks.recipe_processes           # 200 steps of position_all at batch 8: ~4 min on 2 cores
    python -m benchmarks.recipe_processes --quick   # a few steps of the embedded model: about a minute

Both arms run `training/sft.py` as the recipe does, from `configs/toy/sft_focus.yaml` (the one run's focus stages:
batch 8, grouped by length, a constant rate). Seconds a step come from the trainer's TensorBoard log, from step
`warmup` to the last (the start and the first steps apart); the wall time of each arm, start included, is printed
too. Prints both and their ratio; writes benchmarks/results/recipe_processes.json. Run it on an idle machine: each
arm needs both cores.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import RESULTS, machine, parse_bench_args, run_cli, write_json

log = logging.getLogger("benchmarks.recipe_processes")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RecipeProcessesArgs:
    model: str = field(
        default="", metadata={"help": "Start model directory (default: the embedded default model)."}
    )
    task: str = field(default="position_all", metadata={"help": "Toy-world task of the stage's data."})
    scenes: int = field(default=1600, metadata={"help": "Scenes of that task (one conversation each)."})
    steps: int = field(default=200, metadata={"help": "Optimiser steps of each arm."})
    warmup: int = field(default=20, metadata={"help": "Steps left out of the seconds a step (the start)."})
    batch: int = field(
        default=8, metadata={"help": "Conversations a step (each of two processes takes half)."}
    )
    workdir: str | None = field(
        default=None, metadata={"help": "Where the data and both arms go (default: a temp dir)."}
    )
    out: str = field(default=str(RESULTS / "recipe_processes.json"), metadata={"help": "JSON results path."})

    def __post_init__(self) -> None:
        if self.batch % 2:
            raise ValueError(f"--batch must split over two processes, got {self.batch}")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"--warmup must be in [0, --steps), got {self.warmup}")


def seconds_a_step(output_dir: Path, warmup: int) -> float:
    """Wall seconds a step between the logged steps `warmup` (or the first after it) and the last."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times: dict[int, float] = {}
    for events in output_dir.glob("runs/*/events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        times.update({e.step: e.wall_time for e in accumulator.Scalars("train/loss")})
    steps = sorted(s for s in times if s >= warmup)
    if len(steps) < 2:
        raise RuntimeError(
            f"{output_dir}: fewer than two logged steps after step {warmup}; give more --steps"
        )
    return (times[steps[-1]] - times[steps[0]]) / (steps[-1] - steps[0])


def arm(args: RecipeProcessesArgs, work: Path, data: Path, processes: int) -> dict:
    """One arm: the stage's YAML as the recipe writes it, run in `processes` processes; its seconds."""
    from training.recipe import launch_stage, save_stage_yaml, stage_yaml

    name = f"processes_{processes}"
    settings = dict(
        model_name_or_path=args.model,
        dataset=str(data),
        output_dir=str(work / name),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        train_sampling_strategy="group_by_length",
        lr_scheduler_type="constant_with_warmup",
        threads=2,
        logging_steps=1 if args.steps < 50 else 5,
        save_steps=10**6,
        report_to=["tensorboard"],
    )
    start = time.perf_counter()
    if processes == 1:  # the recipe's own call, in a process of its own as the other arm's are
        config = save_stage_yaml(stage_yaml("sft_focus", work, **settings), work, name)
        subprocess.run(
            [sys.executable, str(ROOT / "training" / "sft.py"), "--config", str(config)], check=True
        )
        threads = "1x2"
    else:
        threads = launch_stage("sft", "sft_focus", work, processes, name, settings)
    wall = time.perf_counter() - start
    return {
        "threads": threads,
        "s_per_step": round(seconds_a_step(work / name, args.warmup), 4),
        "wall_s": round(wall, 1),
    }


def main(args: RecipeProcessesArgs) -> dict:
    from assistant.paths import DEFAULT_MODEL_DIR
    from assistant.toyworld import make_dataset

    args.model = args.model or str(DEFAULT_MODEL_DIR)
    facts = machine()
    base = Path(args.workdir or tempfile.mkdtemp(prefix="recipe_processes_"))
    data = base / "data"
    if not (data / "messages.jsonl").is_file():
        log.info("making %d %s scenes in %s", args.scenes, args.task, data)
        make_dataset(data, task=args.task, n=args.scenes, seed=60_000_000, workers=2)
    one = arm(args, base, data, 1)
    two = arm(args, base, data, 2)
    report = {
        "machine": facts,
        "args": asdict(args),
        "baseline": "1 process of 2 threads",
        "one_process": one,
        "two_processes": two,
        "speedup_a_step": round(one["s_per_step"] / two["s_per_step"], 3),
        "speedup_wall": round(one["wall_s"] / two["wall_s"], 3),
    }
    write_json(args.out, report)
    print(
        json.dumps({k: report[k] for k in ("one_process", "two_processes", "speedup_a_step", "speedup_wall")})
    )
    return report


def parse_args(argv: list[str] | None = None) -> RecipeProcessesArgs:
    return parse_bench_args(
        RecipeProcessesArgs, __doc__.splitlines()[0], dict(scenes=24, steps=6, warmup=1, batch=4), argv
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
