"""Rewards of the RL stage on hand-written answers: good, hallucinated and evasive ones."""

from __future__ import annotations

import json

import pytest

from assistant.toyworld.relations import layout_objects, relation_accuracy, text_accuracy
from training.rewards import (
    answer_errs,
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


def test_format_charges_an_answer_cut_at_the_length_limit_when_told_the_end_tokens():
    texts = ["A red star.", "A red star. A blue cross. A red star at the top. A red star at the", ""]
    ids = [[5, 6, 2], [5, 6, 7, 8], []]  # 2 ends an answer; the second was cut, the third is empty
    assert format_reward(texts[1], ended=False) == -1.0
    _, formatted = grpo_reward_functions(end_ids={2, 0})
    assert formatted(prompts=[None] * 3, completions=texts, completion_ids=ids) == [1.0, -1.0, -1.0]
    _, unchecked = grpo_reward_functions()
    assert unchecked(prompts=[None] * 3, completions=texts, completion_ids=ids) == [1.0, 1.0, 1.0]


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


# The scene above laid out: the red star top left, the blue cross top right, the blue circle at the bottom.
LAYOUT = [
    {"shape": "star", "color": "red", "size": "large", "box": [5, 5, 40, 40]},
    {"shape": "cross", "color": "blue", "size": "small", "box": [80, 5, 100, 25]},
    {"shape": "circle", "color": "blue", "size": "medium", "box": [50, 80, 80, 110]},
]
LISTED = "There is a large red star at the top left. There is a small blue cross at the top right. "
LISTED += "There is a medium blue circle at the bottom."


@pytest.mark.parametrize(
    ("sentences", "expected"),
    [
        ("The star is to the left of the cross. The cross is above the circle.", (2, 2)),
        ("The red star is above the blue circle. The large red star is to the left of the cross.", (2, 2)),
        ("The star is to the right of the cross.", (0, 1)),  # the relation does not hold
        ("The hexagon is to the left of the square.", (0, 1)),  # neither object is in the scene
        ("The star is above the star.", (0, 1)),  # one object, not two
        ("The blue object is above the circle. The cross is above the circle.", (1, 1)),  # no shape: not read
        ("", (0, 0)),
    ],
)
def test_relation_sentences_are_checked_on_the_layout(sentences, expected):
    assert relation_accuracy(f"{LISTED} {sentences}", layout_objects(LAYOUT)) == expected


def test_a_name_that_fits_two_objects_picks_out_none():
    layout = layout_objects(
        [*LAYOUT, {"shape": "cross", "color": "red", "size": "small", "box": [0, 90, 10, 100]}]
    )
    assert relation_accuracy("The cross is above the circle.", layout) == (0, 1)
    assert relation_accuracy("The blue cross is above the circle.", layout) == (1, 1)


def test_relation_weight_rewards_right_relations_and_never_silence_over_them():
    right = f"{LISTED} The star is to the left of the cross."
    wrong = f"{LISTED} The hexagon is to the left of the star."
    silent = LISTED
    layout = layout_objects(LAYOUT)
    scores = {
        name: description_reward(text, SCENE, layout=layout, relation_weight=0.3)
        for name, text in (("right", right), ("wrong", wrong), ("silent", silent))
    }
    assert scores["right"] == 1.0 and scores["silent"] == 1.0
    assert scores["wrong"] < scores["silent"]
    assert description_reward(wrong, SCENE, layout=layout) == description_reward(
        wrong, SCENE
    )  # weight 0: off
    grounded, _ = grpo_reward_functions(relation_weight=0.3)
    columns = dict(answer=["", ""], answer_type=["free", "free"], objects=[json.dumps(SCENE)] * 2)
    with_layout = grounded(
        prompts=[None] * 2, completions=[right, wrong], layout=[json.dumps(LAYOUT)] * 2, **columns
    )
    without = grounded(
        prompts=[None] * 2, completions=[right, wrong], **columns
    )  # rows with no layout: unchecked
    assert with_layout[0] == without[0] == 1.0
    assert with_layout[1] < without[1] < 1.0  # the invented hexagon costs precision either way
    with pytest.raises(ValueError, match="relation_weight must be between 0 and 1"):
        grpo_reward_functions(relation_weight=2.0)


def test_claim_penalty_charges_every_wrong_relation_and_no_right_one():
    layout = layout_objects(LAYOUT)
    right = "The star is to the left of the cross."
    wrong = "The star is to the right of the cross."  # both objects listed, the relation does not hold
    wrong2 = "The circle is above the star."
    texts = {
        "silent": LISTED,
        "right": f"{LISTED} {right}",
        "one wrong": f"{LISTED} {wrong}",
        "two wrong": f"{LISTED} {wrong} {wrong2}",
        "right + wrong": f"{LISTED} {right} {wrong}",
    }

    def reward(text, **kw):
        return description_reward(text, SCENE, layout=layout, **kw)

    penalised = {name: reward(text, claim_penalty=0.3) for name, text in texts.items()}
    assert penalised["silent"] == penalised["right"] == 1.0
    assert penalised["one wrong"] == pytest.approx(0.7)
    assert penalised["two wrong"] == pytest.approx(0.49)  # each wrong one costs: fewer is better
    assert penalised["right + wrong"] == pytest.approx(0.7)
    shared = {name: reward(text, relation_weight=0.3) for name, text in texts.items()}
    assert shared["one wrong"] == shared["two wrong"]  # the share alone cannot tell one wrong from two
    both = reward(texts["two wrong"], relation_weight=0.3, claim_penalty=0.3)
    assert both == pytest.approx(0.7 * 0.49)
    with pytest.raises(ValueError, match="claim_penalty must be between 0 and 1"):
        grpo_reward_functions(claim_penalty=1.5)


def test_object_penalty_charges_every_invented_object_and_nothing_else():
    good = "The image shows a red star, a blue cross and a blue circle."
    one = "The image shows a red star, a blue cross, a blue circle and a green heart."
    two = "The image shows a red star, a blue cross, a blue circle, a green heart and a pink square."
    plain = {t: description_reward(t, SCENE) for t in (good, one, two)}
    charged = {t: description_reward(t, SCENE, object_penalty=0.3) for t in (good, one, two)}
    assert charged[good] == plain[good] == 1.0
    assert charged[one] == pytest.approx(0.7 * plain[one])
    assert charged[two] == pytest.approx(0.49 * plain[two])
    wrong_colour = "The image shows a green star, a blue cross and a blue circle."  # CHAIR's colour error
    assert description_reward(wrong_colour, SCENE, object_penalty=0.3) == pytest.approx(
        0.7 * description_reward(wrong_colour, SCENE)
    )
    grounded, _ = grpo_reward_functions(object_penalty=0.3)
    scored = grounded(
        prompts=[None], completions=[one], answer=[""], answer_type=["free"], objects=[json.dumps(SCENE)]
    )
    assert scored == [pytest.approx(charged[one])]
    with pytest.raises(ValueError, match="object_penalty must be between 0 and 1"):
        grpo_reward_functions(object_penalty=-0.1)


def test_claim_penalty_charges_invented_text_when_the_scene_texts_are_known():
    layout = layout_objects(LAYOUT)
    invented = f'{LISTED} The number "21" is written on the right.'
    right = f'{LISTED} The word "OPEN" is written at the top.'

    def reward(text, texts, penalty=0.3):
        return description_reward(text, SCENE, layout=layout, claim_penalty=penalty, texts=texts)

    assert reward(invented, []) == pytest.approx(0.7)  # a text-free scene: the quoted "21" is invented
    assert reward(invented, ["21"]) == 1.0
    assert reward(right, ["open"]) == 1.0  # case ignored
    assert reward(invented, None) == 1.0  # texts unknown (rows without the column): unchecked
    assert reward(invented, [], penalty=0.0) == 1.0
    empty = 'The image is empty. The number "21" is written on the right.'  # a scene with no objects
    assert description_reward(empty, [], claim_penalty=0.3, texts=[]) == pytest.approx(0.7)
    assert description_reward(empty, [], claim_penalty=0.3, texts=["21"]) == 1.0
    assert text_accuracy('A sign at the top says "SALE". The number "7" is written below.', ["SALE"]) == (
        1,
        2,
    )
    grounded, _ = grpo_reward_functions(claim_penalty=0.3)
    columns = dict(answer=[""] * 2, answer_type=["free"] * 2, objects=[json.dumps(SCENE)] * 2)
    layouts = [json.dumps(LAYOUT)] * 2
    scored = grounded(
        prompts=[None] * 2, completions=[invented] * 2, layout=layouts, texts=["[]", "null"], **columns
    )
    assert scored == [pytest.approx(0.7), 1.0]
    assert grounded(
        prompts=[None], completions=[invented], layout=layouts[:1], **{k: v[:1] for k, v in columns.items()}
    ) == [1.0]


def test_answer_errs_marks_invented_objects_and_wrong_short_answers():
    scene = {"answer": "", "answer_type": "free", "objects": [["red", "star"], ["blue", "cross"]]}
    assert not answer_errs("A red star and a blue cross.", scene)
    assert not answer_errs("A red star.", scene)  # naming fewer is not an error here, recall is the reward's
    assert answer_errs("A red star, a blue cross and a green heart.", scene)
    assert answer_errs("A blue star and a blue cross.", scene)  # a colour no star has
    assert not answer_errs("Yes.", {"answer": "Yes", "answer_type": "yes_no", "objects": []})
    assert answer_errs("No.", {"answer": "Yes", "answer_type": "yes_no", "objects": []})
