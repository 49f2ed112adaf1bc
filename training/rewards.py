"""Rewards for the RL stage (training/grpo.py): small pure functions of one answer and its scene's ground truth.

    answer_reward("There are 3.", answer="3", answer_type="number")                      -> 1.0
    description_reward("A red star and a blue cross.", objects=[("red", "star")])        -> precision/recall mix
    format_reward("Yes. Yes. Yes.")                                                      -> 0.0 (two repeats)

Short answers are scored by the evals' own parser (`evals.vqa.answer_credit`), so a reward and an eval never
disagree on what an answer said. Descriptions are scored on the objects they mention (the CHAIR vocabulary:
`assistant.toyworld.chair_words`): precision (every mentioned shape, and every colour named with it, exists)
and recall (the scene's objects are named), so saying less is not a free win. `grpo_reward_functions` wraps
them in TRL's reward-function signature, reading the ground-truth columns each prompt carries. Where a prompt
carries its scene's layout (`layout`: each object's shape, colour, size and box), the relation sentences of a
description ("The star is to the left of the red circle.") are checked too: each must name two objects the scene
has, one each, and the relation must hold (`relation_accuracy`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence

from assistant.toyworld import chair_words
from assistant.toyworld.relations import layout_objects, relation_accuracy, sentences, text_accuracy
from assistant.toyworld.scene import ObjectGT
from assistant.toyworld.vocab import COLOR_NAMES

_COLOR_RE = "|".join(sorted(COLOR_NAMES, key=len, reverse=True))
_SIZE_WORDS = ("small", "medium", "large", "big", "tiny", "little")


def answer_reward(completion: str, answer: str, answer_type: str) -> float:
    """Credit in [0, 1] of a short answer, as skill VQA scores it (unparseable: 0)."""
    from evals.vqa import answer_credit

    credit, _ = answer_credit(answer_type, answer, completion)
    return float(credit)


def mentioned_objects(text: str) -> list[tuple[str | None, str]]:
    """(colour or None, canonical shape) for every shape word in `text`, in order; the colour is the colour word
    just before the shape word (a size word may stand between: "a large red star")."""
    found = []
    lowered = text.lower()
    cursor = 0
    for word, shape in chair_words(text):
        match = re.search(rf"\b{re.escape(word)}\b", lowered[cursor:])
        if match is None:  # chair_words matched it, so it is there; keep the order robust anyway
            found.append((None, shape))
            continue
        start = cursor + match.start()
        before = re.findall(r"[a-z]+", lowered[max(0, start - 40) : start])
        before = [w for w in before if w not in _SIZE_WORDS][-1:]
        color = before[0] if before and re.fullmatch(_COLOR_RE, before[0]) else None
        found.append((color, shape))
        cursor = start + len(word)
    return found


def object_precision_recall(text: str, objects: Sequence[tuple[str, str]]) -> tuple[float, float, int]:
    """(precision, recall, mentions). A mention is right when its shape is in the scene and, if it names a
    colour, an object of that colour and shape is; recall is the share of the scene's distinct (colour, shape)
    objects mentioned with their colour, or by shape alone where no colour was given."""
    truth = {(c, s) for c, s in objects}
    shapes = {s for _, s in truth}
    mentions = mentioned_objects(text)
    right = sum(1 for c, s in mentions if (s in shapes if c is None else (c, s) in truth))
    named = {(c, s) for c, s in mentions}
    covered = sum(1 for c, s in truth if (c, s) in named or (None, s) in named)
    precision = right / len(mentions) if mentions else 1.0
    recall = covered / len(truth) if truth else 1.0
    return precision, recall, len(mentions)


def stated_count(text: str) -> int | None:
    """The number of objects a description states ("The image shows three objects"), or None."""
    from evals.parsing import NUMBER_WORDS

    match = re.search(r"\b([a-z]+|\d+) (?:objects?|shapes?)\b", text.lower())
    if match is None:
        return None
    word = match.group(1)
    return int(word) if word.isdigit() else NUMBER_WORDS.get(word)


def description_reward(
    text: str,
    objects: Sequence[tuple[str, str]],
    recall_weight: float = 0.5,
    count_penalty: float = 0.0,
    layout: Sequence[ObjectGT] | None = None,
    relation_weight: float = 0.0,
    claim_penalty: float = 0.0,
    texts: Sequence[str] | None = None,
    object_penalty: float = 0.0,
) -> float:
    """(1 - w) * precision + w * recall, in [0, 1], times (1 - count_penalty) when the description states a wrong
    number of objects. An empty scene rewards mentioning nothing; a description that mentions nothing in a scene
    with objects gets 0 (precision is vacuous there, so it does not count).

    With the scene's `layout` and `relation_weight` r > 0, a description that states relations gets
    (1 - r) * that + r * the share of its relations that are right: a right relation adds, a wrong one costs, and
    one not stated leaves the reward as it is (so saying none is never better than saying right ones).

    With `claim_penalty` p > 0, each wrong claim beyond the objects multiplies the reward by (1 - p): a relation that
    does not hold (with the layout) and a quoted text the scene does not have (with `texts`, the scene's texts;
    None: not checked). Under the share above one wrong relation and two cost the same, so a model that cannot
    place objects has no reason to state fewer of them; under the penalty every wrong one costs and right ones cost
    nothing. Texts are checked because a model charged for its relations alone learnt to close its descriptions
    with an invented 'The number "21" is written on the right.' instead (session 16).

    With `object_penalty` q > 0, each mention of an object the scene lacks (CHAIR's hallucination: a shape it does
    not have, or a colour no object of that shape has) multiplies the reward by (1 - q). Under precision alone one
    invented object among five mentions costs 0.2 x (1 - recall_weight), less than one wrong relation sentence
    does under relation_weight, so the group's spread, and with it the gradient, is mostly about relations
    (session 28)."""
    precision, recall, mentions = object_precision_recall(text, objects)
    if not objects:
        reward = 1.0 if mentions == 0 else 0.0
    elif mentions == 0:
        return 0.0
    else:
        count = stated_count(text)
        factor = 1.0 - count_penalty if count is not None and count != len(objects) else 1.0
        reward = factor * ((1.0 - recall_weight) * precision + recall_weight * recall)
        reward *= (1.0 - object_penalty) ** round(mentions * (1.0 - precision))
    if layout and (relation_weight > 0 or claim_penalty > 0):
        right, stated = relation_accuracy(text, layout)
        if stated:
            reward = (1.0 - relation_weight) * reward + relation_weight * right / stated
            reward *= (1.0 - claim_penalty) ** (stated - right)
    if texts is not None and claim_penalty > 0:
        right, stated = text_accuracy(text, texts)
        reward *= (1.0 - claim_penalty) ** (stated - right)
    return reward


def format_reward(text: str, ended: bool = True) -> float:
    """1 for an answer with no sentence repeated, 0.5 less per repeat, floored at -1; -1 for an answer that never
    ended (`ended` False: cut at the length limit)."""
    if not ended:
        return -1.0
    said = [s.lower() for s in sentences(text)]
    repeats = len(said) - len(set(said))
    return max(-1.0, 1.0 - 0.5 * repeats)


def grounded_reward(
    completion: str,
    truth: dict,
    recall_weight: float = 0.5,
    count_penalty: float = 0.0,
    relation_weight: float = 0.0,
    claim_penalty: float = 0.0,
    object_penalty: float = 0.0,
) -> float:
    """The reward of one completion for its prompt's ground truth (`truth`, one row's columns; `layout` and `texts`
    optional)."""
    if truth["answer_type"] == "free":
        return description_reward(
            completion,
            [tuple(o) for o in truth["objects"]],
            recall_weight,
            count_penalty,
            layout_objects(truth.get("layout") or []),
            relation_weight,
            claim_penalty,
            truth.get("texts"),
            object_penalty,
        )
    return answer_reward(completion, truth["answer"], truth["answer_type"])


def answer_errs(completion: str, truth: dict) -> bool:
    """Whether one answer errs for its prompt's ground truth (`truth` as `grounded_reward` reads it): a description
    that mentions an object the scene lacks (precision < 1), a short answer the evals' parser scores below full
    credit. GRPO's `hard_samples` keeps the prompts where a sampled answer errs."""
    if truth["answer_type"] == "free":
        return object_precision_recall(completion, [tuple(o) for o in truth["objects"]])[0] < 1.0
    return answer_reward(completion, truth["answer"], truth["answer_type"]) < 1.0


def _text(completion) -> str:
    """TRL passes a string, or for conversational prompts a list of messages whose last one is the answer."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content


def grpo_reward_functions(
    recall_weight: float = 0.5,
    count_penalty: float = 0.0,
    relation_weight: float = 0.0,
    claim_penalty: float = 0.0,
    end_ids: Collection[int] = (),
    object_penalty: float = 0.0,
) -> list[Callable]:
    """[grounded, format] in TRL's signature: f(prompts, completions, **columns) -> list[float]. The dataset's
    ground-truth columns `answer`, `answer_type`, `objects` and `layout` (JSON) come in as keyword lists;
    `recall_weight` is the descriptions' weight of object recall against precision, `count_penalty` the share of a
    description's reward lost when it states a wrong number of objects, `relation_weight` the weight of its
    relation sentences being right (rows with an empty layout: not checked), `claim_penalty` the share lost per wrong
    relation or invented text (the `texts` column, JSON; null: not checked), `object_penalty` the share lost per
    invented object. `end_ids`: the tokens that end an
    answer (EOS, pad); given, the format reward scores an answer whose last token is none of them (TRL's
    `completion_ids`: cut at the length limit) -1 (empty: not checked)."""
    for name, value in (
        ("recall_weight", recall_weight),
        ("count_penalty", count_penalty),
        ("relation_weight", relation_weight),
        ("claim_penalty", claim_penalty),
        ("object_penalty", object_penalty),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")

    def grounded(
        prompts, completions, answer, answer_type, objects, layout=None, texts=None, **_
    ) -> list[float]:
        layouts = layout if layout is not None else ["[]"] * len(completions)
        texts = texts if texts is not None else ["null"] * len(completions)
        return [
            grounded_reward(
                _text(c),
                {
                    "answer": a,
                    "answer_type": t,
                    "objects": json.loads(o),
                    "layout": json.loads(g),
                    "texts": json.loads(x),
                },
                recall_weight,
                count_penalty,
                relation_weight,
                claim_penalty,
                object_penalty,
            )
            for c, a, t, o, g, x in zip(
                completions, answer, answer_type, objects, layouts, texts, strict=True
            )
        ]

    def formatted(prompts, completions, completion_ids=None, **_) -> list[float]:
        if not end_ids or completion_ids is None:
            return [format_reward(_text(c)) for c in completions]
        return [
            format_reward(_text(c), ended=bool(ids) and ids[-1] in end_ids)
            for c, ids in zip(completions, completion_ids, strict=True)
        ]

    grounded.__name__, formatted.__name__ = "grounded", "format"
    return [grounded, formatted]
