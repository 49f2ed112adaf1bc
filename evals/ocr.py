"""OCR scoring: exact match and ANLS (Biten et al. 2019, the ST-VQA / DocVQA metric).

    ANLS = mean over questions of max over gold answers of s(a, g),
    s = 1 - NL(a, g) if NL(a, g) < 0.5 else 0,  NL = Levenshtein(a, g) / max(|a|, |g|)

Both compare answers normalised by `evals.parsing.normalize_text_answer` (case-folded, spaces
collapsed, outer punctuation and quotes stripped), so `"STOP."` matches `STOP`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .parsing import normalize_text_answer

ANLS_THRESHOLD = 0.5


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), two-row dynamic programme."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls_one(answer: str, golds: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    a = normalize_text_answer(answer)
    best = 0.0
    for gold in golds:
        g = normalize_text_answer(gold)
        longest = max(len(a), len(g))
        nl = levenshtein(a, g) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def exact_match_one(answer: str, golds: Sequence[str]) -> bool:
    return normalize_text_answer(answer) in {normalize_text_answer(g) for g in golds}


@dataclass(frozen=True)
class OcrScores:
    n: int
    exact_match: float
    anls: float
    empty: int  # answers with no text at all


def score_ocr(golds: Sequence[str | Sequence[str]], answers: Sequence[str]) -> OcrScores:
    """`golds[i]` is one gold string or a list of acceptable ones for `answers[i]`."""
    if len(golds) != len(answers):
        raise ValueError(f"golds and answers differ in length: golds {len(golds)}, answers {len(answers)}")
    em = anls = 0.0
    empty = 0
    for gold, answer in zip(golds, answers, strict=True):
        options = [gold] if isinstance(gold, str) else list(gold)
        em += exact_match_one(answer, options)
        anls += anls_one(answer, options)
        empty += not answer.strip()
    n = len(answers)
    return OcrScores(n=n, exact_match=em / n if n else 0.0, anls=anls / n if n else 0.0, empty=empty)
