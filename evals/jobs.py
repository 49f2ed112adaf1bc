"""Evaluation jobs: load a set, ask the model (and, with `blind`, the same words without the image),
score, and write the report. `run_benchmark("pope", args)` is what `assistant eval pope` calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from .chair import score_chair, score_relations, score_repeats, score_texts
from .clients import AnswerClient, EvalError, InProcessClient, OpenAIClient, endpoint_model
from .config import EvalArgs
from .data import Dataset, load_chair, load_judge, load_pope, load_qa
from .judge import (
    JUDGE_MAX_TOKENS,
    JUDGE_PROMPT_VERSION,
    JUDGE_SYSTEM,
    JUDGE_TEMPLATE,
    judge_prompt,
    score_judge,
)
from .ocr import score_ocr
from .parsing import parse_yes_no_pope_original
from .pope import score_pope
from .report import Report, Sections, flatten, write_report
from .runner import AnswerCache, EvalItem, RunResult, run_items
from .vqa import score_vqa

log = logging.getLogger(__name__)

Scorer = Callable[[list[dict[str, Any]], list[str]], Sections]


def make_client(args: EvalArgs) -> AnswerClient:
    if args.base_url:
        key = args.api_key or "EMPTY"
        model = args.model or endpoint_model(args.base_url, key, args.timeout)
        return OpenAIClient(args.base_url, model, key, args.max_retries, args.timeout, args.ocr)
    from assistant.cli import resolve_model

    return InProcessClient.load(resolve_model(args.model), device=args.device, ocr=args.ocr)


def _items(rows: list[dict[str, Any]], prompt: Callable[[dict[str, Any]], str]) -> list[EvalItem]:
    return [EvalItem(r["question_id"], prompt(r), r["image_path"]) for r in rows]


def _answers(rows: list[dict[str, Any]], result: RunResult, blind: bool) -> list[str]:
    """Answers in row order; a question the endpoint refused scores as an empty (unparseable) answer."""
    return [result.answers.get((r["question_id"], blind), "") for r in rows]


def _pope_sections(rows: list[dict[str, Any]], answers: list[str]) -> Sections:
    out: Sections = {}
    for category in sorted({r["category"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["category"] == category]
        out[category] = flatten(score_pope([rows[i]["label"] for i in idx], [answers[i] for i in idx]))
    out["all"] = flatten(score_pope([r["label"] for r in rows], answers))
    # the original POPE script's reading of the same answers, for comparison with published numbers
    original = ["yes" if parse_yes_no_pope_original(a) == "yes" else "no" for a in answers]
    out["all"]["accuracy_original_pope_parser"] = score_pope([r["label"] for r in rows], original).accuracy
    return out


def _vqa_sections(rows: list[dict[str, Any]], answers: list[str]) -> Sections:
    scores = score_vqa(rows, answers)
    out: Sections = {task: asdict(s) for task, s in (scores.by_task | scores.by_crowd).items()}
    out["all"] = {k: v for k, v in flatten(scores).items() if "." not in k}
    return out


def _ocr_sections(rows: list[dict[str, Any]], answers: list[str]) -> Sections:
    return {"all": flatten(score_ocr([r.get("answers") or r["answer"] for r in rows], answers))}


def _chair_sections(vocabulary: str) -> Scorer:
    def sections(rows: list[dict[str, Any]], answers: list[str]) -> Sections:
        out = {"all": flatten(score_chair(answers, [set(r["objects"]) for r in rows], vocabulary))}
        out["repeats"] = score_repeats(answers)
        if rows and all("layout" in r for r in rows):
            out["relations"] = score_relations(answers, [r["layout"] for r in rows])
        if rows and all("texts" in r for r in rows):
            out["texts"] = score_texts(answers, [r["texts"] for r in rows])
        return out

    return sections


def _limit(ds: Dataset, args: EvalArgs) -> list[dict[str, Any]]:
    rows = ds.rows[: args.limit] if args.limit else ds.rows
    if not rows:
        raise EvalError(f"{ds.source} has no questions for this benchmark; check --data and the filters")
    return rows


def _out_dir(args: EvalArgs, benchmark: str) -> Path:
    if args.out:
        return Path(args.out)
    raise EvalError(
        f"no report directory; pass --out DIR (or --config FILE to write beside it) for {benchmark}"
    )


def _evaluate(
    benchmark: str,
    args: EvalArgs,
    client: AnswerClient | None,
    ds: Dataset,
    rows: list[dict[str, Any]],
    items: list[EvalItem],
    scorer: Scorer,
    headline: tuple[str, ...],
    notes: dict[str, Any],
    judge_client: AnswerClient | None = None,
) -> tuple[Report, dict[str, Path]]:
    out = _out_dir(args, benchmark)
    client = client or make_client(args)  # after the data loaded: a bad --data fails before a model loads
    modes = (False, True) if args.blind else (False,)
    cache = AnswerCache(out / "answers.jsonl", client.name)
    result = run_items(
        client,
        items,
        max_tokens=args.tokens(benchmark),
        cache=cache,
        blind_modes=modes,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        desc=benchmark,
    )
    errors = {"image": 0, "blind": 0} if args.blind else {"image": 0}
    for _, blind in result.errors:
        errors["blind" if blind else "image"] += 1
    scores: dict[str, Sections] = {}
    for blind in modes:
        answers = _answers(rows, result, blind)
        if judge_client is not None:
            answers = _judge(args, judge_client, rows, answers, blind, out, errors)
        scores["blind" if blind else "image"] = scorer(rows, answers)
    report = Report(
        benchmark=benchmark,
        model=client.name,
        endpoint=args.base_url or "in-process",
        dataset={"source": ds.source, "hash": ds.hash(), "n": len(rows)},
        config=args.public(),
        headline=headline,
        scores=scores,
        errors=errors,
        notes={"max_tokens": args.tokens(benchmark), **notes},
    )
    paths = write_report(report, out)
    (out / "config.yaml").write_text(yaml.safe_dump(args.public(), sort_keys=False), encoding="utf-8")
    return report, paths


def _judge(
    args: EvalArgs,
    judge_client: AnswerClient,
    rows: list[dict[str, Any]],
    answers: list[str],
    blind: bool,
    out: Path,
    errors: dict[str, int],
) -> list[str]:
    """The judge's raw replies for one mode's answers (cached in judge.jsonl beside the answers)."""
    items = [
        EvalItem(
            r["question_id"], judge_prompt(r["text"], r["answer"], a, r.get("facts", "")), None, JUDGE_SYSTEM
        )
        for r, a in zip(rows, answers, strict=True)
    ]
    result = run_items(
        judge_client,
        items,
        max_tokens=JUDGE_MAX_TOKENS,
        cache=AnswerCache(out / "judge.jsonl", judge_client.name),
        blind_modes=(blind,),
        concurrency=args.concurrency,
        desc="judge (blind answers)" if blind else "judge",
    )
    errors["judge"] = errors.get("judge", 0) + len(result.errors)
    return _answers(rows, result, blind)


def run_pope(args: EvalArgs, client: AnswerClient | None) -> tuple[Report, dict[str, Path]]:
    ds = load_pope(Path(args.data), _opt(args.image_dir), args.categories)
    rows = _limit(ds, args)
    items = _items(rows, lambda r: r["text"] + args.suffix)
    notes = {"parser": "first yes/no word (evals.parsing.parse_yes_no); unparseable counted wrong"}
    return _evaluate(
        "pope", args, client, ds, rows, items, _pope_sections, ("accuracy", "f1", "yes_ratio"), notes
    )


def run_chair(args: EvalArgs, client: AnswerClient | None) -> tuple[Report, dict[str, Path]]:
    ds = load_chair(Path(args.data), _opt(args.image_dir))
    rows = _limit(ds, args)
    items = _items(rows, lambda r: args.prompt)
    notes = {
        "prompt": args.prompt,
        "vocabulary": args.vocabulary,
        "chair_i": "per mention, as the original CHAIR",
    }
    return _evaluate(
        "chair",
        args,
        client,
        ds,
        rows,
        items,
        _chair_sections(args.vocabulary),
        ("chair_s", "chair_i"),
        notes,
    )


def run_vqa(args: EvalArgs, client: AnswerClient | None) -> tuple[Report, dict[str, Path]]:
    ds = load_qa(Path(args.data), _opt(args.image_dir))
    rows = [r for r in _limit(ds, args) if r.get("answer_type") != "free"]
    if not rows:
        raise EvalError(
            f"{ds.source} has only free-form questions; use `assistant eval chair` or `judge` for those"
        )
    items = _items(rows, lambda r: r["text"] + args.suffix)
    notes = {"scoring": "closed-set options named in the answer; k options named -> 1/k credit if right"}
    return _evaluate("vqa", args, client, ds, rows, items, _vqa_sections, ("accuracy",), notes)


def run_ocr(args: EvalArgs, client: AnswerClient | None) -> tuple[Report, dict[str, Path]]:
    ds = load_qa(Path(args.data), _opt(args.image_dir))
    rows = [r for r in _limit(ds, args) if r.get("answer_type") == "text" or "answers" in r]
    if not rows:
        raise EvalError(
            f"{ds.source} has no text-reading questions; make one with `assistant toyworld generate --task ocr`"
        )
    items = _items(rows, lambda r: r["text"] + args.suffix)
    return _evaluate("ocr", args, client, ds, rows, items, _ocr_sections, ("exact_match", "anls"), {})


def run_judge(args: EvalArgs, client: AnswerClient | None) -> tuple[Report, dict[str, Path]]:
    if not args.judge_base_url:
        raise EvalError("the judge benchmark needs a judge: pass --judge-base-url and --judge-model")
    judge = OpenAIClient(
        args.judge_base_url,
        args.judge_model or "",
        args.judge_api_key or "EMPTY",
        args.max_retries,
        args.timeout,
    )
    ds = load_judge(Path(args.data), _opt(args.image_dir))
    rows = _limit(ds, args)
    items = _items(rows, lambda r: r["text"] + args.suffix)
    notes = {
        "judge_model": args.judge_model,
        "judge_endpoint": args.judge_base_url,
        "judge_prompt_version": JUDGE_PROMPT_VERSION,
        "judge_system": JUDGE_SYSTEM,
        "judge_template": JUDGE_TEMPLATE,
        "hallucination": "share of parsed ratings below 3; unparseable ratings reported, not counted",
    }

    def scorer(rows: list[dict[str, Any]], replies: list[str]) -> Sections:
        return {"all": flatten(score_judge(replies))}

    return _evaluate(
        "judge", args, client, ds, rows, items, scorer, ("hallucination_rate", "mean_rating"), notes, judge
    )


def _opt(path: str | None) -> Path | None:
    return Path(path) if path else None


BENCHMARKS: dict[str, Callable[[EvalArgs, AnswerClient | None], tuple[Report, dict[str, Path]]]] = {
    "pope": run_pope,
    "chair": run_chair,
    "vqa": run_vqa,
    "ocr": run_ocr,
    "judge": run_judge,
}


def run_benchmark(
    name: str, args: EvalArgs, client: AnswerClient | None = None
) -> tuple[Report, dict[str, Path]]:
    """Run one benchmark; `client` defaults to the endpoint or in-process model the args name."""
    if name not in BENCHMARKS:
        raise EvalError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[name](args, client)
