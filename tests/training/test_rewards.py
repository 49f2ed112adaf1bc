"""Rewards of the RL stage on hand-written answers: good, hallucinated and evasive ones."""

from __future__ import annotations

import json

import pytest

from training.rewards import (
    answer_reward,
    description_reward,
    format_reward,
    grpo_reward_functions,
    mentioned_objects,
    object_precision_recall,
)

SCENE = [("red", "star"), ("blue", "cross"), ("blue", "circle")]


@pytest.mark.parametrize(
    ("completion", "answer", "answer_type", "expected"),
    [
        ("3", "3", "number", 1.0),
        ("There are three objects.", "3", "number", 1.0),
        ("4", "3", "number", 0.0),
        ("Yes", "Yes", "yes_no", 1.0),
        ("No, there is not.", "Yes", "yes_no", 0.0),
        ("I cannot tell.", "Yes", "yes_no", 0.0),  # evasive: unparseable gets nothing
        ("It is a star.", "star", "shape", 1.0),
        ("blue", "red", "color", 0.0),
    ],
)
def test_short_answers_are_scored_by_the_evals_parser(completion, answer, answer_type, expected):
    assert answer_reward(completion, answer, answer_type) == expected


def test_mentions_keep_their_colour_even_past_a_size_word():
    assert mentioned_objects("A large red star, a blue plus sign and some discs.") == [
        ("red", "star"),
        ("blue", "cross"),
        (None, "circle"),
    ]


def test_descriptions_reward_precision_and_recall():
    good = "The image shows a red star, a blue cross and a blue circle."
    hallucinated = "The image shows a red star, a green heart, a yellow square and a blue cross."
    wrong_colour = "The image shows a blue star, a blue cross and a blue circle."
    evasive = "The image shows some objects on a light background."
    terse = "A red star."
    assert object_precision_recall(good, SCENE) == (1.0, 1.0, 3)
    assert description_reward(good, SCENE) == 1.0
    scores = {t: description_reward(t, SCENE) for t in (hallucinated, wrong_colour, evasive, terse)}
    assert all(score < 1.0 for score in scores.values())
    assert scores[evasive] == 0.0  # saying nothing is not a free win
    assert scores[terse] == pytest.approx(0.5 + 0.5 / 3)  # precise but names one object of three
    assert object_precision_recall(hallucinated, SCENE)[0] == 0.5  # two of four mentions invented
    assert description_reward("An empty background.", []) == 1.0
    assert description_reward("A red star.", []) == 0.0


def test_format_penalises_repeated_sentences():
    assert format_reward("A red star. A blue cross.") == 1.0
    assert format_reward("A red star. A red star. A red star.") == 0.0
    assert format_reward("Yes. " * 10) == -1.0


def test_trl_signature_reads_the_ground_truth_columns():
    grounded, formatted = grpo_reward_functions()
    completions = ["3", [{"role": "assistant", "content": "A red star and a blue cross."}]]
    columns = dict(
        answer=["3", ""],
        answer_type=["number", "free"],
        objects=[json.dumps(SCENE), json.dumps(SCENE[:2])],
    )
    assert grounded(prompts=[None, None], completions=completions, **columns) == [1.0, 1.0]
    assert formatted(prompts=[None, None], completions=completions) == [1.0, 1.0]


def test_recall_weight_makes_naming_fewer_objects_cost_more():
    """One of three objects named, rightly, against two of them named beside two hallucinations."""
    columns = dict(answer=["", ""], answer_type=["free", "free"], objects=[json.dumps(SCENE)] * 2)
    few = "A red star."
    many = "A red star, a blue cross, a green circle and a pink heart."
    for weight, few_wins in [(0.2, True), (0.8, False)]:
        grounded, _ = grpo_reward_functions(recall_weight=weight)
        scores = grounded(prompts=[None, None], completions=[few, many], **columns)
        assert (scores[0] > scores[1]) == few_wins, (weight, scores)
    with pytest.raises(ValueError, match="recall_weight must be between 0 and 1"):
        grpo_reward_functions(recall_weight=1.5)


def test_a_wrong_stated_count_costs_the_count_penalty():
    right = (
        "The image shows three objects. There is a red star. There is a blue cross. There is a blue circle."
    )
    wrong = right.replace("three objects", "four objects")
    assert description_reward(right, SCENE, count_penalty=0.5) == 1.0
    assert description_reward(wrong, SCENE, count_penalty=0.5) == 0.5
    assert description_reward(wrong, SCENE) == 1.0  # off by default
    assert description_reward("There is a red star.", SCENE) == description_reward(
        "There is a red star.", SCENE[:3]
    )
    with pytest.raises(ValueError, match="count_penalty must be between 0 and 1"):
        grpo_reward_functions(count_penalty=-0.1)
