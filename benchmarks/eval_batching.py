"""In-process evaluation, one question a forward pass against several in one left-padded batch (`EvalArgs.batch_size`,
`Assistant.chat_batch`; the probe's `max_batch`), on what the recipe evaluates after every stage (VQA, POPE, the
probe) and of its final models (CHAIR's descriptions): questions/s, and how many answers differ from the one-at-a-time baseline measured in the same run.

    python -m benchmarks.eval_batching                        # ~5 minutes on 2 cores; results/eval_batching.json
    python -m benchmarks.eval_batching --batch-sizes 1 4 16 32
    python -m benchmarks.eval_batching --quick                # seconds, exercises every path

Conditions: every batch size on the same `--n` toy-world questions of each benchmark (the recipe's VQA, POPE and
CHAIR sets, built as `training.recipe` builds them; the probe's four questions on each of n / 4 one-object scenes),
interleaved over `--repeats`, the model loaded once. The ratio
divides each condition's median questions/s by the baseline's (the first batch size, 1 by default). Answers are
greedy, so any that differ from the baseline's come from padding's float rounding; they are counted, each
condition's accuracy is reported beside, and for the probe the largest difference of any feature it fits on.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import (
    RESULTS,
    choose_model,
    machine,
    parse_bench_args,
    run_cli,
    torch_threads,
    write_json,
)

log = logging.getLogger("benchmarks.eval_batching")
SETS = {"vqa": ("instruct", 0), "pope": ("pope", 100_000), "chair": ("chair", 200_000)}  # task, seed offset
PROBE_ATTRS = ["color", "region", "shape", "size"]  # the probe's four questions a toy scene


@dataclass
class EvalBatchingBenchArgs:
    model: str | None = field(default=None, metadata={"help": "Model dir to evaluate (default: embedded)."})
    n: int = field(default=300, metadata={"help": "Questions per benchmark (the probe: n / 4 scenes)."})
    batch_sizes: list[int] = field(
        default_factory=lambda: [1, 16], metadata={"help": "Batch sizes; the first is the baseline."}
    )
    benchmarks: list[str] = field(
        default_factory=lambda: [*SETS, "probe"], metadata={"help": "Any of vqa, pope, chair and probe."}
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"help": "Answer token budget (default: each benchmark's, as the recipe runs it)."},
    )
    repeats: int = field(default=1, metadata={"help": "Measurements per condition, interleaved."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)."})
    seed: int = field(default=1_900_000_000, metadata={"help": "First scene seed (the held-out range)."})
    out: str = field(default=str(RESULTS / "eval_batching.json"), metadata={"help": "JSON results path."})

    def __post_init__(self) -> None:
        for name in ("n", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"--batch_sizes must be positive, got {self.batch_sizes}")
        unknown = sorted(set(self.benchmarks) - {*SETS, "probe"})
        if unknown or not self.benchmarks:
            raise ValueError(f"--benchmarks must be among vqa, pope, chair and probe, got {self.benchmarks}")


QUICK = dict(
    n=8, batch_sizes=[1, 4], repeats=1, max_tokens=8
)  # a tiny model's context holds no 256-token answer


def answer_set(
    bench: str, data: Path, out: Path, client, batch: int, args: EvalBatchingBenchArgs
) -> tuple[dict, dict, dict]:
    """One run of a VQA, POPE or CHAIR set: (answers by question, headline scores by section, {})."""
    from evals.config import EvalArgs
    from evals.jobs import run_benchmark
    from evals.runner import AnswerCache

    eval_args = EvalArgs(
        data=str(data), out=str(out), limit=args.n, batch_size=batch, max_tokens=args.max_tokens
    )
    report, _ = run_benchmark(bench, eval_args, client)
    if sum(report.errors.values()):
        raise RuntimeError(
            f"{bench}: the model refused {report.errors} questions; see the log (a lower --max-tokens?)"
        )
    scores = {
        section: {m: v for m, v in metrics.items() if m in report.headline}
        for section, metrics in report.scores["image"].items()
    }
    return AnswerCache(out / "answers.jsonl", client.name).answers, scores, {}


def probe_set(assistant, n: int, batch: int) -> tuple[dict, dict, dict]:
    """One probe extraction of n // 4 one-object scenes (four questions each): (answers by question, the answer
    accuracy by attribute, the features by question and point)."""
    from evals.probe import extract, score, toyworld_items

    items = toyworld_items(max(2, n // len(PROBE_ATTRS)))
    extracted = extract(assistant, items, PROBE_ATTRS, max_batch=batch)
    answers = {(a, i): t for a, texts in extracted["answers"].items() for i, t in enumerate(texts)}
    scores = {a: {"answer": row["answer"]} for a, row in score(items, extracted, steps=1).items()}
    return answers, scores, extracted["features"]


def main(args: EvalBatchingBenchArgs) -> dict:
    from assistant.toyworld import make_dataset
    from evals.clients import InProcessClient

    choice = choose_model(args.model)
    client = InProcessClient.load(choice.path, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-eval-batching-") as tmp, torch_threads(args.threads):
        work = Path(tmp)
        for bench in args.benchmarks:
            if bench != "probe":
                task, offset = SETS[bench]
                data = make_dataset(
                    work / bench, task=task, n=args.n, seed=args.seed + offset, eval_split=True
                )
            rates: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
            runs: dict[int, tuple[dict, dict, dict]] = {}
            for repeat in range(args.repeats):
                for batch in args.batch_sizes:
                    start = time.perf_counter()
                    if bench == "probe":
                        runs[batch] = probe_set(client.assistant, args.n, batch)
                    else:
                        out = work / f"{bench}-{batch}-{repeat}"
                        runs[batch] = answer_set(bench, data, out, client, batch, args)
                    rate = len(runs[batch][0]) / (time.perf_counter() - start)
                    rates[batch].append(rate)
                    log.info("%s, batch %d, repeat %d: %.1f questions/s", bench, batch, repeat + 1, rate)
            base_batch = args.batch_sizes[0]
            base = statistics.median(rates[base_batch])
            for batch in args.batch_sizes:
                answers, scores, features = runs[batch]
                row = {
                    "benchmark": bench,
                    "batch_size": batch,
                    "questions": len(answers),
                    "questions_per_s": statistics.median(rates[batch]),
                    "all": rates[batch],
                    "ratio_to_baseline": statistics.median(rates[batch]) / base,
                    "answers_differing_from_baseline": sum(
                        answers.get(k) != a for k, a in runs[base_batch][0].items()
                    ),
                    "scores": scores,
                }
                if features:  # the probe: how far padding moved any feature
                    row["max_feature_difference"] = max(
                        (x - runs[base_batch][2][attr][point]).abs().max().item()
                        for attr, points in features.items()
                        for point, x in points.items()
                    )
                rows.append(row)
    report = {
        "benchmark": "eval_batching",
        "args": asdict(args),
        "model": choice.note,
        "machine": machine(),
        "baseline": f"batch size {args.batch_sizes[0]}",
        "rows": rows,
    }
    lines = [f"{'benchmark':<10}{'batch':>6}{'q/s':>8}{'x baseline':>12}{'answers differing':>19}"] + [
        f"{r['benchmark']:<10}{r['batch_size']:>6}{r['questions_per_s']:>8.1f}{r['ratio_to_baseline']:>12.2f}"
        f"{r['answers_differing_from_baseline']:>19}"
        for r in rows
    ]
    log.info("in-process evaluation batches (%s):\n%s", choice.note, "\n".join(lines))
    write_json(args.out, report)
    return report


def parse_args(argv: list[str] | None = None) -> EvalBatchingBenchArgs:
    return parse_bench_args(
        EvalBatchingBenchArgs,
        "In-process evaluation questions/s by batch size, against one question at a time.",
        QUICK,
        argv,
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
