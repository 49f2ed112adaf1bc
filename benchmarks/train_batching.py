"""How batches are drawn, and with how many threads, against the baseline in the same run: samples/s of a stage-2c
style run (the LM and connector trained on a recipe task's conversations, from a finished model), and the share of
each batch that is real tokens rather than padding.

    python -m benchmarks.train_batching                    # ~3 minutes on 2 cores; results/train_batching.json
    python -m benchmarks.train_batching --threads 1 2      # also 2 threads (meaningful on an idle machine only)
    python -m benchmarks.train_batching --quick            # seconds, exercises every path

Conditions: every sampler (`random`, the default of every YAML in configs/toy/, and `group_by_length`,
training/common.py's `LengthGroupingMixin`) at every thread count, each `--steps` optimiser steps on the same
`--n` conversations, in this order, interleaved over `--repeats`. The ratios divide each condition's median
samples/s by the baseline's (random, the first thread count). The real-token share is a property of the sampler:
one epoch's batches drawn with a fixed seed, tokens counted as `training.common.sample_lengths` counts them.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import RESULTS, choose_model, machine, parse_bench_args, run_cli, write_json

log = logging.getLogger("benchmarks.train_batching")
SAMPLERS = ("random", "group_by_length")


@dataclass
class BatchingBenchArgs:
    model: str | None = field(default=None, metadata={"help": "Model dir to train from (default: embedded)."})
    task: str = field(
        default="instruct_many_compare3",
        metadata={
            "help": "Toy-world task of the conversations (default: the last recipe run's stage 2c data)."
        },
    )
    n: int = field(default=2000, metadata={"help": "Conversations generated (the sampler's epoch)."})
    steps: int = field(default=30, metadata={"help": "Optimiser steps per measurement."})
    batch: int = field(default=16, metadata={"help": "Batch size (the recipe's)."})
    repeats: int = field(default=2, metadata={"help": "Measurements per condition, interleaved."})
    threads: list[int] = field(
        default_factory=lambda: [1], metadata={"help": "torch thread counts to compare."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the data and of training."})
    out: str = field(default=str(RESULTS / "train_batching.json"), metadata={"help": "JSON results path."})

    def __post_init__(self) -> None:
        for name in ("n", "steps", "batch", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"--threads must be positive counts, got {self.threads}")


QUICK = dict(n=48, steps=2, batch=4, repeats=1)


def real_token_share(lengths: list[int], batch: int, sampler: str, seed: int) -> float:
    """Real tokens over padded tokens for one epoch of `sampler`'s batches (each padded to its longest row)."""
    import torch

    from training.common import ShuffledBatchesSampler

    with torch.random.fork_rng():  # the samplers draw from torch's global generator, as in training
        torch.manual_seed(seed)
        if sampler == "group_by_length":
            order = list(ShuffledBatchesSampler(batch, lengths))
        else:
            order = torch.randperm(len(lengths)).tolist()
    real = padded = 0
    for start in range(0, len(order), batch):
        rows = [lengths[i] for i in order[start : start + batch]]
        real, padded = real + sum(rows), padded + max(rows) * len(rows)
    return real / padded


def train_once(
    model: str, data: Path, out: Path, args: BatchingBenchArgs, sampler: str, threads: int
) -> float:
    """Samples/s of one `training.sft` run of `args.steps` steps (the trainer's own runtime, first step included)."""
    from trl import ModelConfig, SFTConfig

    from training import sft
    from training.recipe import stage_config

    sft.main(
        *stage_config(
            "sft_refresh",
            out.parent,
            (sft.SFTScriptArgs, SFTConfig, ModelConfig),
            saved_as=out.name,
            model_name_or_path=model,
            dataset=str(data),
            output_dir=str(out),
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            save_steps=10**6,
            logging_steps=args.steps,
            report_to=[],
            seed=args.seed,
            threads=threads,
            train_sampling_strategy=sampler,
        )
    )
    state = json.loads((out / "trainer_state.json").read_text())
    return next(e["train_samples_per_second"] for e in reversed(state["log_history"]) if "train_runtime" in e)


def main(args: BatchingBenchArgs) -> dict:
    from assistant.processing import load_processor
    from assistant.toyworld import make_dataset
    from training.common import sample_lengths
    from training.data import load_sft_dataset

    choice = choose_model(args.model)
    conditions = [(sampler, threads) for threads in args.threads for sampler in SAMPLERS]
    rates: dict[tuple[str, int], list[float]] = {c: [] for c in conditions}
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        work = Path(tmp)
        data = make_dataset(
            work / "data", task=args.task, n=args.n, seed=70_000_000 + args.seed, overwrite=True
        )
        dataset, _ = load_sft_dataset(str(data))
        lengths = sample_lengths(dataset, load_processor(choice.path))
        shares = {s: real_token_share(lengths, args.batch, s, args.seed) for s in SAMPLERS}
        for repeat in range(args.repeats):
            for sampler, threads in conditions:
                out = work / f"{sampler}-{threads}-{repeat}"
                rate = train_once(choice.path, data, out, args, sampler, threads)
                rates[sampler, threads].append(rate)
                log.info("%s, %d thread(s), repeat %d: %.2f samples/s", sampler, threads, repeat + 1, rate)
    base = statistics.median(rates[conditions[0]])
    rows = [
        {
            "sampler": sampler,
            "threads": threads,
            "samples_per_s": statistics.median(rates[sampler, threads]),
            "all": rates[sampler, threads],
            "ratio_to_baseline": statistics.median(rates[sampler, threads]) / base,
            "real_token_share": shares[sampler],
        }
        for sampler, threads in conditions
    ]
    report = {
        "benchmark": "train_batching",
        "args": asdict(args),
        "model": choice.note,
        "machine": machine(),
        "conversations": len(lengths),
        "tokens_per_row": {"mean": statistics.mean(lengths), "min": min(lengths), "max": max(lengths)},
        "baseline": f"{conditions[0][0]} sampler, {conditions[0][1]} thread(s)",
        "rows": rows,
    }
    lines = [f"{'sampler':<17}{'threads':>8}{'samples/s':>11}{'x baseline':>12}{'real tokens':>13}"] + [
        f"{r['sampler']:<17}{r['threads']:>8}{r['samples_per_s']:>11.2f}{r['ratio_to_baseline']:>12.2f}"
        f"{r['real_token_share']:>13.2f}"
        for r in rows
    ]
    log.info("training batches (%s, %s):\n%s", args.task, choice.note, "\n".join(lines))
    write_json(args.out, report)
    return report


def parse_args(argv: list[str] | None = None) -> BatchingBenchArgs:
    return parse_bench_args(
        BatchingBenchArgs,
        "Training samples/s by batch sampler and threads, against the baseline.",
        QUICK,
        argv,
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
