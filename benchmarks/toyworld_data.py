"""The recipe's data step, toy-world sets written as now against how they were written before session 45, same run.

    python -m benchmarks.toyworld_data                   # ~2 minutes on 2 idle cores; results/toyworld_data.json
    python -m benchmarks.toyworld_data --n 2000 --tasks color_by_size dense_detail
    python -m benchmarks.toyworld_data --quick           # seconds, exercises every path

Conditions, each making the same `--n` scenes of every task in `--tasks` (`assistant.toyworld.make_dataset`),
interleaved over `--repeats`:
- `before`: every scene's image written, one process, at PIL's default PNG compression (6), as before session 45;
- `1` .. : the writer as it is now (only the images the task's records use, PNG level 1) over that many processes
  (process start-up counted).
The ratio divides each condition's median scenes/s by `before`'s. The images of the records must decode to the same
pixels in every condition and be byte-identical across process counts (checked: the benchmark fails otherwise).
Meaningful on an idle machine only: the recipe takes only the CPUs idle when its data step starts (`choose_workers`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from benchmarks.common import RESULTS, machine, parse_bench_args, run_cli, write_json

log = logging.getLogger("benchmarks.toyworld_data")


@dataclass
class ToyworldDataBenchArgs:
    tasks: list[str] = field(
        default_factory=lambda: ["color_by_size", "dense_detail", "position_all"],
        metadata={
            "help": "Toy-world tasks (the recipe's focus sets: one that keeps a third of its scenes, two most)."
        },
    )
    n: int = field(default=3000, metadata={"help": "Scenes of each task."})
    workers: list[int] = field(
        default_factory=lambda: [1, 2], metadata={"help": "Process counts of the writer as it is now."}
    )
    repeats: int = field(default=2, metadata={"help": "Measurements per condition, interleaved."})
    seed: int = field(
        default=60_000_000, metadata={"help": "First scene seed (the recipe's first focus set's)."}
    )
    out: str = field(default=str(RESULTS / "toyworld_data.json"), metadata={"help": "JSON results path."})

    def __post_init__(self) -> None:
        if self.n < 1 or self.repeats < 1:
            raise ValueError(f"--n and --repeats must be >= 1, got {self.n} and {self.repeats}")
        if not self.workers or min(self.workers) < 1:
            raise ValueError(f"--workers must be positive counts, got {self.workers}")
        from assistant.toyworld import TASKS

        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown:
            raise ValueError(f"--tasks must be toy-world tasks; unknown: {unknown or 'none given'}")


# 600 scenes: two processes really start (MIN_SCENES_PER_WORKER)
QUICK = dict(tasks=["color_by_size"], n=600, repeats=1)


def _make_before(out: Path, task: str, n: int, seed: int) -> None:
    """A set as the writer made it before session 45: every scene's image, one process, PNG level 6, then the
    records (no manifest: it is not read here)."""
    from assistant.toyworld import build_records, generate_scene, get_preset, get_task, writers

    config = get_preset("tiny")
    scenes = [generate_scene(s, config) for s in range(seed, seed + n)]
    records = build_records(task, scenes, seed)
    images = writers.write_images(out, scenes, compress_level=6)
    writers._write_records(out, get_task(task).format, records, images, {s.seed: s for s in scenes})


def _record_images(data: Path) -> dict[str, tuple[str, str]]:
    """The images the set's records use: {name: (sha256 of its pixels, of its file's bytes)}."""
    names = {row["image"] for row in json.loads((data / "llava.json").read_text())}
    out = {}
    for name in sorted(names):
        with Image.open(data / name) as im:
            pixels = hashlib.sha256(im.convert("RGB").tobytes()).hexdigest()
        out[name] = (pixels, hashlib.sha256((data / name).read_bytes()).hexdigest())
    return out


def _check_same(written: dict, tasks: list[str], first: int) -> None:
    """Every condition's record images have before's pixels; every process count wrote the first count's bytes."""
    for task in tasks:
        now = written[first][task]
        if {k: v[0] for k, v in now.items()} != {k: v[0] for k, v in written["before"][task].items()}:
            raise RuntimeError(f"{task}: the images written now differ in pixels from before's")
        for condition, sets in written.items():
            if condition != "before" and sets[task] != now:
                raise RuntimeError(f"{task}: {condition} processes wrote other bytes than {first}")


def main(args: ToyworldDataBenchArgs) -> dict:
    from assistant.toyworld import make_dataset

    conditions: list[int | str] = ["before", *args.workers]
    rates: dict[int | str, list[float]] = {c: [] for c in conditions}
    images: dict[int | str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-toyworld-data-") as tmp:
        work = Path(tmp)
        for repeat in range(args.repeats):
            for condition in conditions:
                sets = {task: work / f"{condition}-{repeat}" / task for task in args.tasks}
                start = time.perf_counter()
                for task, data in sets.items():
                    if condition == "before":
                        _make_before(data, task, args.n, args.seed)
                    else:
                        make_dataset(data, task=task, n=args.n, seed=args.seed, workers=int(condition))
                seconds = time.perf_counter() - start
                rates[condition].append(len(args.tasks) * args.n / seconds)
                images[condition] = sum(len(list((d / "images").glob("*.png"))) for d in sets.values())
                log.info(
                    "%s, repeat %d: %d scenes, %d images in %.1f s",
                    condition if condition == "before" else f"{condition} process(es)",
                    repeat + 1,
                    len(args.tasks) * args.n,
                    images[condition],
                    seconds,
                )
            written = {
                c: {t: _record_images(work / f"{c}-{repeat}" / t) for t in args.tasks} for c in conditions
            }
            _check_same(written, args.tasks, args.workers[0])
            shutil.rmtree(work)
            work.mkdir()
    base = statistics.median(rates["before"])
    rows = [
        {
            "condition": c,
            "scenes_per_s": statistics.median(rates[c]),
            "all": rates[c],
            "images": images[c],
            "ratio_to_baseline": statistics.median(rates[c]) / base,
        }
        for c in conditions
    ]
    report = {
        "benchmark": "toyworld_data",
        "args": asdict(args),
        "machine": machine(),
        "baseline": "before (every image, PNG level 6, one process)",
        "rows": rows,
    }
    lines = [f"{'condition':>10}{'scenes/s':>10}{'images':>8}{'x before':>10}"] + [
        f"{r['condition']!s:>10}{r['scenes_per_s']:>10.0f}{r['images']:>8}{r['ratio_to_baseline']:>10.2f}"
        for r in rows
    ]
    log.info("toy-world sets (%s, %d scenes each):\n%s", ", ".join(args.tasks), args.n, "\n".join(lines))
    write_json(args.out, report)
    return report


def parse_args(argv: list[str] | None = None) -> ToyworldDataBenchArgs:
    return parse_bench_args(
        ToyworldDataBenchArgs,
        "Toy-world sets written as now against before session 45, same run.",
        QUICK,
        argv,
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
