"""`assistant eval pope|chair|vqa|ocr|judge ...`: run one benchmark and write its report; `compare` two runs.

assistant eval pope --data data/toy-pope --blind --out reports/pope              # embedded model
assistant eval vqa --config configs/evals/toy_vqa.yaml --base-url http://127.0.0.1:8000/v1 --model toy
assistant eval compare runs/toy/evals/stage2 runs/toy/evals/final   # is a change real? (evals/compare.py)
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .clients import EvalError
from .config import BENCHMARK_NAMES, EvalArgs, load_args

log = logging.getLogger(__name__)

_HELP = {
    "pope": "POPE yes/no object probing (random, popular, adversarial).",
    "chair": "CHAIR_s / CHAIR_i over detailed descriptions.",
    "vqa": "Toy-world skill VQA: accuracy per question type.",
    "ocr": "Reading text: exact match and ANLS.",
    "judge": "MMHal-style judge ratings 0-6 and hallucination rate.",
}


def _add_fields(p: argparse.ArgumentParser) -> None:
    for f in fields(EvalArgs):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "categories":
            p.add_argument(flag, nargs="+", default=None, help=help_text)
        else:
            kind = {"int | None": int, "int": int, "float": float}.get(str(f.type), str)
            default_note = "" if f.default in (MISSING, None) else f" (default: {f.default})"
            p.add_argument(flag, type=kind, default=None, help=help_text + default_note)


def cmd_eval(args: argparse.Namespace) -> int:
    from .jobs import run_benchmark

    overrides = {f.name: getattr(args, f.name) for f in fields(EvalArgs)}
    if args.config and not overrides["out"]:
        config = Path(args.config)
        overrides["out"] = str(config.parent / f"{config.stem}-{args.benchmark}")
    eval_args = load_args(args.config, overrides)
    report, paths = run_benchmark(args.benchmark, eval_args)
    headline = report.scores["image"].get("all") or next(iter(report.scores["image"].values()))
    summary = ", ".join(f"{m}={headline[m]:.4f}" for m in report.headline if m in headline)
    log.info("%s on %s: %s; report in %s", args.benchmark, report.model, summary, paths["md"].parent)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from assistant.cli import resolve_model

    from .probe import markdown, run_probe

    if args.n < 4:
        raise EvalError(f"--n must be >= 4 (half the images fit the probes, half test them), got {args.n}")
    result = run_probe(
        resolve_model(args.model),
        Path(args.out) if args.out else None,
        Path(args.data) if args.data else None,
        args.n,
    )
    sys.stdout.write(markdown(result["scores"]) + "\n")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, markdown

    a, b = Path(args.a), Path(args.b)
    sys.stdout.write(markdown(compare(a, b, args.resamples, args.seed), a, b) + "\n")
    return 0


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Evaluate a model: POPE, CHAIR, skill VQA, OCR, judge, probe.")
    benchmarks = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name in BENCHMARK_NAMES:
        b = benchmarks.add_parser(name, help=_HELP[name])
        b.add_argument("--config", help="YAML file of these arguments; the report goes beside it.")
        _add_fields(b)
        b.set_defaults(func=cmd_eval)
    b = benchmarks.add_parser(
        "probe", help="Linear probes along the model (encoder, connector, LM layers) and one-object answers."
    )
    b.add_argument("--model", help="Model directory or hub id (default: the embedded model).")
    b.add_argument(
        "--data", help="JSONL of {image, labels, questions?} rows (default: toy one-object scenes)."
    )
    b.add_argument("--n", type=int, default=400, help="Toy-world scenes when no --data (default: 400).")
    b.add_argument("--out", help="Directory for probe.json and probe.md.")
    b.set_defaults(func=cmd_probe)
    b = benchmarks.add_parser(
        "compare",
        help="Two models' evals on the same questions: each metric's difference with a paired-bootstrap interval.",
    )
    b.add_argument(
        "a", help="Eval directory of model A (holding vqa/, pope/, chair/ reports), e.g. the baseline."
    )
    b.add_argument("b", help="Eval directory of model B, on the same data.")
    b.add_argument("--resamples", type=int, default=2000, help="Bootstrap resamples (default: 2000).")
    b.add_argument("--seed", type=int, default=0, help="Seed of the resampling (default: 0).")
    b.set_defaults(func=cmd_compare)
