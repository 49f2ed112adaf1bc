"""Answer parsing: free text from a model -> a yes/no, a number, or the closed-set options it names.

Conventions (documented in docs/evals.md and tested in tests/evals/test_parsing.py):
- Text is normalised first: lower case, "n't" expanded to " not", punctuation turned into spaces.
- Yes/no: the first yes-word or no-word decides (the convention of LLaVA's POPE evaluation and of
  lmms-eval). A hedge ("not sure", "cannot tell", "don't know") or no yes/no word at all is
  unparseable (None). The original POPE script differs: it keeps the first sentence and answers
  "no" if it contains "no"/"not"/"No", else "yes", so "I can't tell" becomes "no" and "Maybe" becomes
  "yes" there; `parse_yes_no_pope_original` reproduces it for comparison.
- Closed-set answers (colour, shape, region, ...): every option the answer names, longest phrase
  first; naming several distinct options is a tie that is never broken toward the first one named
  (scorers give 1/k credit, the expected score of a uniform random pick).
- Numbers: digits or number words; several distinct numbers are a tie in the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

YES_WORDS = frozenset({"yes", "yeah", "yep", "yup"})
NO_WORDS = frozenset({"no", "not", "nope", "none"})
HEDGES: tuple[str, ...] = (
    "not sure",
    "unsure",
    "cannot tell",
    "can not tell",
    "cannot determine",
    "can not determine",
    "do not know",
    "unclear",
    "impossible to tell",
    "not possible to tell",
)
NUMBER_WORDS: dict[str, int] = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
NUMBER_WORDS["none"] = 0  # "no" is not a number: "No, there are two" states one count


def normalize(text: str) -> str:
    """Lower case, "n't" -> " not", punctuation -> spaces, whitespace collapsed."""
    text = text.lower().replace("’", "'")
    text = text.replace("can't", "can not").replace("won't", "will not").replace("n't", " not")
    text = re.sub(r"[^\w\s$.]|(?<!\d)\.|\.(?!\d)", " ", text)  # keep "$4.75" and "3.5"
    return " ".join(text.split())


def words(text: str) -> list[str]:
    return normalize(text).split()


_FINAL = re.compile(r"\banswer\s*:", re.IGNORECASE)


def final_answer(text: str) -> str:
    """The part of an answer that is scored: after the last "Answer:" when the model reasons first ("I see a red
    star and a blue circle. Answer: No."), else the whole text."""
    parts = _FINAL.split(text)
    return parts[-1].strip() if len(parts) > 1 else text


def parse_yes_no(text: str) -> str | None:
    """`"Yes, there is."` -> "yes"; `"There isn't."` -> "no"; `"Not sure."` or `"A cat."` -> None."""
    norm = normalize(text)
    padded = f" {norm} "
    if any(f" {h} " in padded for h in HEDGES):
        return None
    for word in norm.split():
        if word in YES_WORDS:
            return "yes"
        if word in NO_WORDS:
            return "no"
    return None


def parse_yes_no_pope_original(text: str) -> str:
    """The original POPE script (evaluate.py): first sentence; "no" if it has No/not/no, else "yes"."""
    if "." in text:
        text = text.split(".")[0]
    tokens = text.replace(",", "").split(" ")
    return "no" if ("No" in tokens or "not" in tokens or "no" in tokens) else "yes"


def find_options(text: str, options: Iterable[str]) -> set[str]:
    """Every option (a word or phrase) the text names, matching longest phrases first on whole words.

    `find_options("at the top left", ["top", "left", "top left"])` -> {"top left"}.
    """
    tokens = words(text)
    by_len = sorted({normalize(o): o for o in options}.items(), key=lambda kv: -len(kv[0].split()))
    found: set[str] = set()
    used = [False] * len(tokens)
    for norm, original in by_len:
        n = len(norm.split())
        if n == 0:
            continue
        target = norm.split()
        for i in range(len(tokens) - n + 1):
            if tokens[i : i + n] == target and not any(used[i : i + n]):
                found.add(original)
                used[i : i + n] = [True] * n
    return found


def find_numbers(text: str) -> set[int]:
    """Every count the text states, as digits or number words; `"two, maybe 3"` -> {2, 3}."""
    out: set[int] = set()
    for tok in words(text):
        if re.fullmatch(r"\d+", tok):
            out.add(int(tok))
        elif tok in NUMBER_WORDS:
            out.add(NUMBER_WORDS[tok])
    return out


def normalize_text_answer(text: str) -> str:
    """For OCR exact match: case-folded, outer punctuation and quotes stripped, spaces collapsed."""
    text = " ".join(text.strip().split()).casefold()
    return text.strip(" .,;:!?\"'`“”‘’")
