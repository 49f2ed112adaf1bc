"""Threads benchmark: what users get with no flags ("as shipped": assistant.threads' rule) against every fixed
thread count, on an idle machine and with one core kept busy by another process, in one run.

    python -m benchmarks.threads                  # embedded model, writes benchmarks/results/threads.json
    python -m benchmarks.threads --quick          # seconds: tiny settings, exercises every path

Per condition (idle, one core busy) and setting (as shipped, 1, 2, ... up to the usable CPUs):
- serving: this server (HTTP, real `openai` client), median latency at c=1 and output tokens/s at c=8, with a
  fixed answer length (vLLM's `min_tokens` extra);
- preprocessing: AnyRes images/s through the model's processor (one image per call, as requests bring them);
- training: samples/s of stages 1-3 (a few optimiser steps each, from a few-step stage 0, as benchmarks/train.py).
The ratios compare "as shipped" with the best fixed setting of the same condition in this run (goal: within
1.2x). "One core busy" is a Python process spinning (`while True: pass`) for the whole condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import (
    RESULTS,
    choose_model,
    machine,
    parse_bench_args,
    run_cli,
    summary,
    toy_images,
    write_json,
)
from benchmarks.servers import ServerProcess

log = logging.getLogger("benchmarks.threads")
SHIPPED = 0  # no thread flag: the rule of assistant.threads


@dataclass
class ThreadsBenchArgs:
    model: str | None = field(
        default=None, metadata={"help": "Model dir (default: embedded, else a stand-in)."}
    )
    threads: list[int] = field(
        default_factory=list, metadata={"help": "Fixed thread counts to compare (default: 1 .. usable CPUs)."}
    )
    repeats: int = field(default=3, metadata={"help": "Measured waves per setting (>= 1)."})
    requests: int = field(default=8, metadata={"help": "Requests per serving wave."})
    max_tokens: int = field(default=32, metadata={"help": "Tokens of every answer."})
    images: int = field(default=16, metadata={"help": "Images per preprocessing pass."})
    steps: int = field(
        default=8, metadata={"help": "Optimiser steps per training stage (0: no training part)."}
    )
    batch: int = field(default=8, metadata={"help": "Batch size of stages 1-2 (DPO takes half)."})
    out: str = field(default=str(RESULTS / "threads.json"), metadata={"help": "JSON results path."})

    def __post_init__(self) -> None:
        for name in ("repeats", "requests", "max_tokens", "images", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or any(t < 1 for t in self.threads):
            raise ValueError("--steps must be >= 0 and every --threads value >= 1")


QUICK = dict(repeats=1, requests=2, max_tokens=4, images=2, steps=1, batch=2, threads=[1])


@contextlib.contextmanager
def one_core_busy(busy: bool) -> Iterator[None]:
    """A process spinning one core for the block (nothing when `busy` is false)."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def serving(args: ThreadsBenchArgs, model_dir: str, threads: int, images: list) -> dict:
    from benchmarks.serve import client_wave, data_url, workload

    urls = [data_url(image) for image in images]
    server = ServerProcess("project", model_dir, max_batch_size=16, threads=threads)
    try:
        metrics = httpx.get(server.base_url + "/metrics").text
        engine_threads = next(
            int(float(line.split()[-1]))
            for line in metrics.splitlines()
            if line.startswith("assistant_engine_threads ")
        )
        model = httpx.get(server.base_url + "/v1/models").json()["data"][0]["id"]
        out = {"engine_threads": engine_threads}
        for c in (1, 8):
            work = workload(max(args.requests, c), urls)
            asyncio.run(client_wave(server.base_url, model, work[:c], c, args.max_tokens))  # warm-up
            latencies, rates = [], []
            for _ in range(args.repeats):
                samples, wall = asyncio.run(client_wave(server.base_url, model, work, c, args.max_tokens))
                latencies.append(statistics.median(s.latency for s in samples))
                rates.append(sum(s.tokens for s in samples) / wall)
            out[f"c{c}_latency_s"] = summary(latencies)
            out[f"c{c}_output_tokens_per_s"] = summary(rates)
    finally:
        server.close()
    return out


def preprocessing(args: ThreadsBenchArgs, model_dir: str, threads: int) -> dict:
    """In a fresh process (`preprocess_child`), so that the thread setting is that process's own, as in the
    server."""
    root = Path(__file__).resolve().parents[1]
    code = "import sys; from benchmarks.threads import preprocess_child; preprocess_child(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, model_dir, str(threads), str(args.images), str(args.repeats)],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def preprocess_child(model_dir: str, threads: str, n: str, repeats: str) -> None:
    """AnyRes images/s (benchmarks.preprocess's measure) at `threads` torch threads, printed as one JSON line."""
    import torch

    from assistant.anyres import with_fast_anyres
    from assistant.processing import load_processor
    from benchmarks.preprocess import images_per_s

    torch.set_num_threads(int(threads))
    processor = with_fast_anyres(load_processor(model_dir))
    rate = images_per_s(
        lambda batch: processor.image_processor(batch, return_tensors="pt"),
        toy_images(int(n), seed=2_000),
        int(repeats),
        "preprocess",
    )
    print(json.dumps({"threads": torch.get_num_threads(), "images_per_s": rate}))


def training(args: ThreadsBenchArgs, threads: int, work: Path, data: dict, stage0: Path) -> dict:
    from benchmarks.train import TrainBenchArgs, run_stages

    work.mkdir(parents=True)
    (work / "stage0").symlink_to(stage0)
    bench = TrainBenchArgs(steps=args.steps, batch=args.batch, workdir=str(work))
    stages = run_stages(bench, work, data, extra={"threads": threads})
    return {name: {"samples_per_s": row["samples_per_s"]} for name, row in stages.items()}


def training_setup(args: ThreadsBenchArgs, work: Path) -> dict:
    from assistant.toyworld import make_dataset
    from benchmarks.train import TrainBenchArgs, run_stage0

    n = max(args.steps * args.batch, 16)
    plan = (("caption", 10_000_000), ("instruct", 20_000_000), ("preference", 30_000_000))
    data = {
        task: make_dataset(work / "data" / task, task=task, n=n, seed=seed, overwrite=True)
        for task, seed in plan
    }
    run_stage0(TrainBenchArgs(stage0_steps=2, workdir=str(work)), work)  # backbones for stage 1; speed only
    return data


def label(threads: int) -> str:
    return "as shipped" if threads == SHIPPED else f"{threads} thread{'s' if threads > 1 else ''}"


def ratios(rows: dict) -> dict:
    """Per condition and figure: as shipped against the best fixed setting (> 1: as shipped is slower)."""
    figures = {  # name: (path into a row, higher is better)
        "serving c=1 latency": (("serving", "c1_latency_s"), False),
        "serving c=8 tok/s": (("serving", "c8_output_tokens_per_s"), True),
        "preprocessing img/s": (("preprocessing", "images_per_s"), True),
        "training stage1 samples/s": (("training", "stage1", "samples_per_s"), True),
        "training stage2 samples/s": (("training", "stage2", "samples_per_s"), True),
        "training stage3 samples/s": (("training", "stage3", "samples_per_s"), True),
    }
    out: dict = {}
    for condition, by_setting in rows.items():
        out[condition] = {}
        for name, (path, higher) in figures.items():
            values = {}
            for setting, row in by_setting.items():
                value = row
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
                if isinstance(value, dict):
                    value = value["median"]
                if value is not None:
                    values[setting] = value
            if label(SHIPPED) not in values or len(values) < 2:
                continue
            shipped = values[label(SHIPPED)]
            fixed = {k: v for k, v in values.items() if k != label(SHIPPED)}
            best_setting = (max if higher else min)(fixed, key=fixed.get)
            best = fixed[best_setting]
            slower = best / shipped if higher else shipped / best
            out[condition][name] = {"shipped_vs_best": round(slower, 3), "best": best_setting}
    return out


def table(rows: dict, ratio: dict) -> str:
    lines = [
        "| condition | setting | engine threads | c=1 latency ms | c=8 tok/s | preprocess img/s | stage 1 / 2 / 3 samples/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for condition, by_setting in rows.items():
        for setting, row in by_setting.items():
            s, p, t = row.get("serving", {}), row.get("preprocessing", {}), row.get("training", {})
            train = " / ".join(
                f"{t[k]['samples_per_s']:.1f}" for k in ("stage1", "stage2", "stage3") if k in t
            )
            lines.append(
                f"| {condition} | {setting} | {s.get('engine_threads', '-')} | "
                f"{1000 * s['c1_latency_s']['median']:.0f} | {s['c8_output_tokens_per_s']['median']:.0f} | "
                f"{p['images_per_s']['median']:.0f} | {train or '-'} |"
            )
    lines += [
        "",
        "| condition | figure | as shipped vs best (1.00 = as good) | best setting |",
        "|---|---|---|---|",
    ]
    for condition, figures in ratio.items():
        for name, r in figures.items():
            lines.append(f"| {condition} | {name} | {r['shipped_vs_best']:.2f}x | {r['best']} |")
    return "\n".join(lines)


def main(args: ThreadsBenchArgs) -> dict:
    from assistant.threads import usable_cpus

    if os.environ.get("OMP_NUM_THREADS"):
        raise RuntimeError(
            "OMP_NUM_THREADS is set, so 'as shipped' would not be the shipped default; unset it"
        )
    info = machine()
    choice = choose_model(args.model)
    images = toy_images(8, seed=1_000)
    settings = [SHIPPED] + (args.threads or list(range(1, usable_cpus() + 1)))
    rows: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        data = training_setup(args, Path(tmp)) if args.steps else {}
        for condition, busy in (("idle", False), ("one core busy", True)):
            rows[condition] = {}
            with one_core_busy(busy):
                for threads in settings:
                    row = {"serving": serving(args, choice.path, threads, images)}
                    # as shipped, the server's process preprocesses with the engine's thread count
                    chosen = threads or row["serving"]["engine_threads"]
                    row["preprocessing"] = preprocessing(args, choice.path, chosen)
                    if args.steps:
                        row["training"] = training(
                            args, threads, Path(tmp) / f"{busy}-{threads}", data, Path(tmp) / "stage0"
                        )
                    rows[condition][label(threads)] = row
                    log.info(
                        "%s, %s: %s", condition, label(threads), row["serving"]["c1_latency_s"]["median"]
                    )
    ratio = ratios(rows)
    report = {
        "benchmark": "threads",
        "model": asdict(choice),
        "args": asdict(args),
        "machine": {**info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": rows,
        "ratios": ratio,
    }
    log.info(
        "threads benchmark (%s), medians over %d repeats:\n%s", choice.note, args.repeats, table(rows, ratio)
    )
    write_json(args.out, report)
    return report


def parse_args(argv: list[str] | None = None) -> ThreadsBenchArgs:
    return parse_bench_args(
        ThreadsBenchArgs, "As-shipped threads against every fixed setting, idle and busy.", QUICK, argv
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
