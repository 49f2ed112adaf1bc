"""Skill VQA on the toy world: accuracy per question type with normalised, closed-set answers.

Each answer type has its own parser (`PARSERS`): the parser returns the set of options an answer
names. An answer that names none is unparseable (scored 0 and reported); one that names k distinct
options gets 1/k credit if the right one is among them (`choice_credit`): the expected score of
breaking the tie uniformly at random, so no tie is ever broken toward the first option named, and
naming every option scores exactly chance. Yes/no answers follow `parse_yes_no` (first yes/no word).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from assistant.toyworld import COLORS, SHAPES, canonical_shapes
from assistant.toyworld.relations import REGIONS, RELATIONS
from assistant.toyworld.vocab import SIZES

from .parsing import final_answer, find_numbers, find_options, normalize_text_answer, parse_yes_no

COLOR_NAMES = tuple(COLORS)
REGION_NAMES = tuple(r for row in REGIONS for r in row)
OBJECT_NAMES = tuple(f"{c} {s}" for c in COLOR_NAMES for s in SHAPES)


def _yes_no(text: str) -> set[str]:
    pred = parse_yes_no(text)
    return {pred} if pred else set()


def _options(options: Sequence[str]) -> Callable[[str], set[str]]:
    return lambda text: find_options(text, options)


PARSERS: dict[str, Callable[[str], set[str]]] = {
    "yes_no": _yes_no,
    "number": lambda text: {str(n) for n in find_numbers(text)},
    "color": _options(COLOR_NAMES + ("grey", "gray", "black", "white")),
    "shape": canonical_shapes,
    "size": _options(SIZES),
    "object": _options(OBJECT_NAMES),
    "relation": _options(RELATIONS),
    "region": _options(REGION_NAMES),
    "text": lambda text: {normalize_text_answer(text)} if text.strip() else set(),
}
UNSCORED_TYPES = frozenset({"free"})  # captions and descriptions: CHAIR and the judge score those


def choice_credit(scores: Mapping[str, float], gold: str) -> float:
    """Credit for a choice among scored options: 1/k if `gold` is among the k best, else 0.

    Equal scores for all k options give 1/k (chance); an empty mapping gives 0.
    """
    if not scores:
        return 0.0
    best = max(scores.values())
    top = [o for o, s in scores.items() if s == best]
    return 1.0 / len(top) if gold in top else 0.0


def gold_key(answer_type: str, gold: str) -> str:
    if answer_type == "text":
        return normalize_text_answer(gold)
    if answer_type == "number":
        return str(next(iter(find_numbers(gold)), gold.strip()))
    if answer_type == "shape":
        return next(iter(canonical_shapes(gold)), gold.strip().lower())
    return gold.strip().lower()


def answer_credit(answer_type: str, gold: str, answer: str) -> tuple[float, bool]:
    """(credit in [0, 1], parseable) for one answer."""
    if answer_type not in PARSERS:
        raise ValueError(f"unknown answer_type {answer_type!r}; choose from {sorted(PARSERS)}")
    named = {o.lower() for o in PARSERS[answer_type](final_answer(answer))}
    if not named:
        return 0.0, False
    return choice_credit(dict.fromkeys(named, 1.0), gold_key(answer_type, gold)), True


@dataclass(frozen=True)
class SkillScore:
    n: int
    accuracy: float
    unparseable: int


@dataclass(frozen=True)
class VqaScores:
    n: int
    accuracy: float  # mean over scored questions
    macro_accuracy: float  # mean over skills
    unparseable: int
    skipped: int  # free-form questions (not scored here)
    by_task: dict[str, SkillScore] = field(default_factory=dict)
    by_answer_type: dict[str, SkillScore] = field(default_factory=dict)
    by_crowd: dict[str, SkillScore] = field(default_factory=dict)  # "shape@4+": skill by objects in the image


def crowd_bucket(n_objects: int) -> str:
    """Scenes by how many objects they hold: "0", "1", "2-3" or "4+"."""
    return "4+" if n_objects >= 4 else "2-3" if n_objects >= 2 else str(n_objects)


def _group(rows: list[tuple[str, float, bool]]) -> dict[str, SkillScore]:
    acc: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for key, credit, ok in rows:
        acc[key].append((credit, ok))
    return {
        k: SkillScore(len(v), sum(c for c, _ in v) / len(v), sum(not ok for _, ok in v))
        for k, v in sorted(acc.items())
    }


def score_vqa(questions: Sequence[Mapping[str, str]], answers: Sequence[str]) -> VqaScores:
    """`questions`: rows with `answer`, `task` and `answer_type` (as in the toy world's qa.jsonl), and
    optionally `n_objects` (the scores by skill and crowd, `by_crowd`)."""
    if len(questions) != len(answers):
        raise ValueError(
            f"questions and answers differ in length: questions {len(questions)}, answers {len(answers)}"
        )
    by_task, by_type, by_crowd, skipped = [], [], [], 0
    for q, answer in zip(questions, answers, strict=True):
        if q["answer_type"] in UNSCORED_TYPES:
            skipped += 1
            continue
        credit, ok = answer_credit(q["answer_type"], q["answer"], answer)
        by_task.append((q["task"], credit, ok))
        by_type.append((q["answer_type"], credit, ok))
        if "n_objects" in q:
            by_crowd.append((f"{q['task']}@{crowd_bucket(q['n_objects'])}", credit, ok))
    tasks = _group(by_task)
    n = len(by_task)
    return VqaScores(
        n=n,
        accuracy=sum(c for _, c, _ in by_task) / n if n else 0.0,
        macro_accuracy=sum(s.accuracy for s in tasks.values()) / len(tasks) if tasks else 0.0,
        unparseable=sum(not ok for _, _, ok in by_task),
        skipped=skipped,
        by_task=tasks,
        by_answer_type=_group(by_type),
        by_crowd=_group(by_crowd),
    )
