"""Is a change real? Two models' evals on the same questions, compared item by item.

    assistant eval compare runs/armD/evals/stage2 runs/armG/evals/final_grpo

For every eval both directories hold (each subdirectory with a report of vqa, pope or chair, as `assistant eval`,
the recipe and scripts/api_eval.sh write them: vqa/, pope/, chair/, text/, color/ ...; VQA also by task, and by task
on scenes of four or more objects, e.g. `color@4+`), the answers are re-scored per item with the evals' own scorers,
and each metric's difference B - A gets a 95% interval from a paired bootstrap: the same resampled questions for
both models, so what both got right or wrong cancels. On 557 skill-VQA questions one model's accuracy has a
standard error near 0.02, while the paired difference of two close models has one near 0.01 (95% intervals of about
+-0.02); a difference whose interval holds 0 is not a change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chair import chair_item
from .clients import EvalError
from .data import LOADERS
from .parsing import final_answer, parse_yes_no
from .runner import AnswerCache
from .vqa import answer_credit, crowd_bucket

# per-item columns -> metric, for a set of item indices
Metric = Callable[[dict[str, np.ndarray], np.ndarray], float]


def _mean(column: str) -> Metric:
    return lambda cols, idx: float(cols[column][idx].mean())


def _ratio(num: str, den: str) -> Metric:
    def metric(cols: dict[str, np.ndarray], idx: np.ndarray) -> float:
        d = cols[den][idx].sum()
        return float(cols[num][idx].sum() / d) if d else 0.0

    return metric


def _f1(cols: dict[str, np.ndarray], idx: np.ndarray) -> float:
    tp, fp, fn = (cols[k][idx].sum() for k in ("tp", "fp", "fn"))
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


@dataclass(frozen=True)
class Row:
    benchmark: str
    metric: str
    n: int
    a: float
    b: float
    low: float  # 95% interval of b - a
    high: float

    @property
    def diff(self) -> float:
        return self.b - self.a

    @property
    def changed(self) -> bool:
        return self.low > 0 or self.high < 0


def _report(run: Path, name: str) -> dict | None:
    path = run / name / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _evals(a: Path, b: Path) -> list[tuple[str, str, dict, dict]]:
    """(subdirectory, benchmark, A's report, B's report) of every eval both directories hold: vqa, pope and chair
    first, then the rest by name."""
    names = [d.name for d in a.iterdir() if d.is_dir()] if a.is_dir() else []
    order = list(METRICS)
    out = []
    for name in sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n)):
        report_a, report_b = _report(a, name), _report(b, name)
        if report_a and report_b and report_a.get("benchmark") in METRICS:
            out.append((name, report_a["benchmark"], report_a, report_b))
    return out


def _answers(run: Path, name: str, report: dict, rows: list[dict]) -> list[str]:
    cache = AnswerCache(run / name / "answers.jsonl", report["model"])
    # a question the endpoint refused scores as an empty answer, as in the report
    return [cache.get((r["question_id"], False)) or "" for r in rows]


def _rows(report: dict, bench: str) -> list[dict]:
    source, limit = Path(report["dataset"]["source"]), report["config"].get("limit")
    rows = LOADERS[bench](source).rows
    rows = rows[:limit] if limit else rows
    if bench == "vqa":
        rows = [r for r in rows if r.get("answer_type") != "free"]
    if len(rows) != report["dataset"]["n"]:
        raise EvalError(
            f"{source}: {len(rows)} questions rebuilt, the report scored {report['dataset']['n']}"
        )
    return rows


def _columns(bench: str, rows: list[dict], answers: list[str], vocabulary: str) -> dict[str, np.ndarray]:
    if bench == "vqa":
        credit = [
            answer_credit(r["answer_type"], r["answer"], a)[0] for r, a in zip(rows, answers, strict=True)
        ]
        return {"credit": np.array(credit)}
    if bench == "pope":
        labels = np.array([r["label"].strip().lower() == "yes" for r in rows])
        pred = [parse_yes_no(final_answer(a)) for a in answers]
        said_yes = np.array([p == "yes" for p in pred])
        return {
            "correct": np.array(
                [(p == "yes") == lab and p is not None for p, lab in zip(pred, labels, strict=True)]
            ),
            "yes": said_yes,
            "tp": said_yes & labels,
            "fp": said_yes & ~labels,
            "fn": ~said_yes & labels,
        }
    items = [chair_item(a, set(r["objects"]), vocabulary) for r, a in zip(rows, answers, strict=True)]
    cols = {
        "mentions": np.array([len(m) for m, _ in items]),
        "hallucinated": np.array([len(h) for _, h in items]),
        "with_hallucination": np.array([bool(h) for _, h in items]),
        "covered": np.array([len(set(m) & set(r["objects"])) for (m, _), r in zip(items, rows, strict=True)]),
        "truth": np.array([len(set(r["objects"])) for r in rows]),
    }
    if rows and all("layout" in r for r in rows):  # toy-world scenes: the relation sentences are checked too
        from assistant.toyworld.relations import layout_objects, relation_accuracy

        rel = [relation_accuracy(a, layout_objects(r["layout"])) for r, a in zip(rows, answers, strict=True)]
        cols["relations_right"] = np.array([right for right, _ in rel])
        cols["relations_stated"] = np.array([stated for _, stated in rel])
    if rows and all("texts" in r for r in rows):  # ... and their quoted text
        from assistant.toyworld.relations import text_accuracy

        said = [text_accuracy(a, r["texts"]) for r, a in zip(rows, answers, strict=True)]
        cols["texts_stated"] = np.array([stated for _, stated in said])
        cols["texts_invented"] = np.array([stated - right for right, stated in said])
    return cols


# benchmark -> (metric name as in the reports, how to compute it, the rows it covers: all or one task)
METRICS: dict[str, list[tuple[str, Metric]]] = {
    "vqa": [("accuracy", _mean("credit"))],
    "pope": [("f1", _f1), ("accuracy", _mean("correct")), ("yes_ratio", _mean("yes"))],
    "chair": [
        ("chair_i", _ratio("hallucinated", "mentions")),
        ("chair_s", _mean("with_hallucination")),
        ("coverage", _ratio("covered", "truth")),
        ("relations.accuracy", _ratio("relations_right", "relations_stated")),
        ("relations.per_description", _mean("relations_stated")),
        ("texts.invented_per_description", _mean("texts_invented")),
    ],
}


def compare(a: Path, b: Path, resamples: int = 2000, seed: int = 0) -> list[Row]:
    """Paired-bootstrap rows for every eval both directories hold (VQA also per task, and at 4+ objects)."""
    rng = np.random.default_rng(seed)
    out: list[Row] = []
    for name, bench, report_a, report_b in _evals(a, b):
        metrics = METRICS[bench]
        if report_a["dataset"]["hash"] != report_b["dataset"]["hash"]:
            raise EvalError(f"{a / name} and {b / name} scored different data; compare runs on one eval set")
        if report_a["dataset"]["n"] != report_b["dataset"]["n"]:
            ends = [f"{r['dataset']['n']} (limit {r['config'].get('limit')})" for r in (report_a, report_b)]
            raise EvalError(
                f"{a / name} scored {ends[0]} questions, {b / name} {ends[1]}; evaluate both with one --limit"
            )
        rows = _rows(report_a, bench)
        vocabulary = report_a["config"].get("vocabulary", "toyworld")
        cols = [
            _columns(bench, rows, _answers(run, name, report, rows), vocabulary)
            for run, report in ((a, report_a), (b, report_b))
        ]
        groups = {"all": np.arange(len(rows))}
        if bench == "vqa":
            crowded = all("n_objects" in r for r in rows)  # toy-world scenes: also on four or more objects
            for task in sorted({r["task"] for r in rows}):
                of_task = [i for i, r in enumerate(rows) if r["task"] == task]
                if len(of_task) < len(rows):  # (one task alone: its rows are "all")
                    groups[task] = np.array(of_task)
                crowd = [i for i in of_task if crowded and crowd_bucket(rows[i]["n_objects"]) == "4+"]
                if crowd and len(crowd) < len(of_task):  # as the report's by_crowd, e.g. color@4+
                    groups[f"{task}@4+"] = np.array(crowd)
        for group, idx in groups.items():
            draws = rng.integers(0, len(idx), size=(resamples, len(idx)))
            for metric_name, metric in metrics:
                if metric_name.startswith("relations.") and "relations_stated" not in cols[0]:
                    continue  # scenes without a layout: no relation figures
                if metric_name.startswith("texts.") and "texts_stated" not in cols[0]:
                    continue  # scenes without their texts: no text figures
                values = [metric(c, idx) for c in cols]
                if group == "all":  # the per-item rescoring must reproduce each report's own figure
                    section, _, key = metric_name.rpartition(".")
                    for run, report, value in ((a, report_a, values[0]), (b, report_b, values[1])):
                        reported = report["scores"]["image"].get(section or "all", {}).get(key)
                        if reported is not None and abs(reported - value) > 1e-6:
                            raise EvalError(
                                f"{run / name}: rescored {metric_name} {value:.4f}, report {reported:.4f}"
                            )
                diffs = np.array([metric(cols[1], idx[d]) - metric(cols[0], idx[d]) for d in draws])
                low, high = np.percentile(diffs, [2.5, 97.5])
                label = metric_name if group == "all" else f"{metric_name} ({group})"
                out.append(Row(name, label, len(idx), values[0], values[1], float(low), float(high)))
    if not out:
        raise EvalError(f"{a} and {b} share no vqa, pope or chair report; point at two eval directories")
    return out


def markdown(rows: list[Row], a: Path, b: Path) -> str:
    lines = [
        f"A = {a}, B = {b}; 95% interval of B - A from a paired bootstrap; * = the interval excludes 0",
        "",
        "| benchmark | metric | n | A | B | B - A | 95% interval |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        star = " *" if r.changed else ""
        lines.append(
            f"| {r.benchmark} | {r.metric} | {r.n} | {r.a:.3f} | {r.b:.3f} | {r.diff:+.3f}{star} | "
            f"{r.low:+.3f} .. {r.high:+.3f} |"
        )
    return "\n".join(lines)
