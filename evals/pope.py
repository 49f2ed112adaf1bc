"""POPE scoring: accuracy, precision, recall, F1 and yes-ratio from yes/no labels and raw answers.

Unparseable answers (see `evals.parsing.parse_yes_no`) are counted wrong and reported: an
unparseable answer to a "yes" question is a miss (it lowers recall), one to a "no" question is
neither a true negative nor a false positive (it lowers accuracy only); neither counts as a "yes"
in the yes-ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .parsing import final_answer, parse_yes_no

LABELS = ("yes", "no")


@dataclass(frozen=True)
class PopeScores:
    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    tp: int
    fp: int
    tn: int
    fn: int
    unparseable: int


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def score_pope(labels: Sequence[str], answers: Sequence[str]) -> PopeScores:
    """Score raw answers against "yes"/"no" labels (same order, same length)."""
    if len(labels) != len(answers):
        raise ValueError(f"labels and answers differ in length: labels {len(labels)}, answers {len(answers)}")
    tp = fp = tn = fn = unparseable = 0
    for label, answer in zip(labels, answers, strict=True):
        label = label.strip().lower()
        if label not in LABELS:
            raise ValueError(f"POPE labels must be 'yes' or 'no', got {label!r}")
        pred = parse_yes_no(final_answer(answer))
        if pred is None:
            unparseable += 1
            fn += label == "yes"
        elif pred == "yes":
            tp += label == "yes"
            fp += label == "no"
        else:
            tn += label == "no"
            fn += label == "yes"
    n = len(labels)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return PopeScores(
        n=n,
        accuracy=_ratio(tp + tn, n),
        precision=precision,
        recall=recall,
        f1=_ratio(2 * precision * recall, precision + recall),
        yes_ratio=_ratio(tp + fp, n),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        unparseable=unparseable,
    )
