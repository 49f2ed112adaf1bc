"""Scorers against hand-computed examples, including where the original POPE and CHAIR scripts differ."""

from __future__ import annotations

import pytest

from assistant.toyworld import COLORS
from evals.chair import score_chair, score_relations, score_repeats, score_texts
from evals.judge import parse_rating, score_judge
from evals.ocr import anls_one, levenshtein, score_ocr
from evals.parsing import find_numbers, find_options, parse_yes_no, parse_yes_no_pope_original
from evals.pope import score_pope
from evals.vocab_coco import COCO_CATEGORIES, coco_chair_words, plural
from evals.vqa import choice_credit, score_vqa


@pytest.mark.parametrize(
    ("text", "ours", "original"),
    [
        ("Yes, there is a cat.", "yes", "yes"),
        ("No.", "no", "no"),
        (
            "There isn't a dog in the image.",
            "no",
            "yes",
        ),  # the original splits on spaces: "isn't" is not "not"
        ("There is not a dog.", "no", "no"),
        ("I'm not sure.", None, "no"),  # a hedge: unparseable here, "no" there
        ("A red circle.", None, "yes"),  # no yes/no word: unparseable here, "yes" there
        ("NO", "no", "yes"),  # the original is case-sensitive ("No" or "no" only)
        ("Yes. No dogs though.", "yes", "yes"),  # first sentence / first word
        ("", None, "yes"),
    ],
)
def test_yes_no_parsing_against_the_original_pope_script(text, ours, original):
    assert parse_yes_no(text) == ours
    assert parse_yes_no_pope_original(text) == original


def test_pope_hand_computed():
    labels = ["yes", "yes", "yes", "no", "no", "no"]
    answers = ["Yes", "no", "maybe", "yes", "No", "nope, none"]
    s = score_pope(labels, answers)
    # TP=1, FN=1 (+1 unparseable yes -> miss), FP=1, TN=2
    assert (s.tp, s.fp, s.tn, s.fn, s.unparseable) == (1, 1, 2, 2, 1)
    assert s.accuracy == pytest.approx(3 / 6)
    assert s.precision == pytest.approx(1 / 2)
    assert s.recall == pytest.approx(1 / 3)
    assert s.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert s.yes_ratio == pytest.approx(2 / 6)


@pytest.mark.parametrize("constant", ["Yes.", "No.", "A cat."])
def test_a_constant_answer_scores_at_chance_on_pope(constant):
    labels = ["yes", "no"] * 10
    s = score_pope(labels, [constant] * 20)
    expected_acc = 0.0 if constant == "A cat." else 0.5  # unparseable is wrong, never a free 50%
    assert s.accuracy == pytest.approx(expected_acc)
    assert s.yes_ratio == (1.0 if constant == "Yes." else 0.0)


def test_pope_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        score_pope(["yes"], [])
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        score_pope(["maybe"], ["yes"])


def test_chair_toyworld_hand_computed_per_mention_like_the_original():
    descriptions = [
        "A red circle and a blue square. The circle is left of the square.",  # 4 mentions, none hallucinated
        "Two stars, a star again, and a heart.",  # stars x2 + star + heart; truth {heart}
        "Nothing here.",
    ]
    truths = [{"circle", "square"}, {"heart"}, {"circle"}]
    s = score_chair(descriptions, truths)
    assert s.mentions == 4 + 3
    assert s.hallucinated_mentions == 2  # "stars" and "star": every mention counts (original CHAIR)
    assert s.chair_i == pytest.approx(2 / 7)
    assert s.chair_i_unique == pytest.approx(1 / 4)  # the deduplicated variant: star once over 4 objects
    assert s.chair_s == pytest.approx(1 / 3)
    assert s.coverage == pytest.approx(3 / 4)
    assert s.empty == 1


def test_relations_hand_computed_on_a_layout():
    layout = [
        {"shape": "circle", "color": "red", "size": "small", "box": [0, 0, 20, 20]},
        {"shape": "square", "color": "blue", "size": "large", "box": [60, 0, 100, 40]},
    ]
    descriptions = [
        "A red circle and a blue square. The circle is to the left of the square.",  # right
        "The square is to the left of the circle. The star is above the circle.",  # wrong, wrong (no star)
        "A red circle and a blue square.",  # none stated
    ]
    s = score_relations(descriptions, [layout] * 3)
    assert (s["stated"], s["right"], s["descriptions_with_relations"]) == (3, 1, 2)
    assert s["accuracy"] == pytest.approx(1 / 3) and s["per_description"] == 1.0


def test_chair_coco_synonyms_plurals_and_two_word_phrases():
    words = coco_chair_words("Two men eat hot dogs beside a teddy bear, three giraffes and a stop sign.")
    assert [c for _, c in words] == ["person", "hot dog", "teddy bear", "giraffe", "stop sign"]
    s = score_chair(["A man rides bikes past a dog."], [{"person", "bicycle"}], vocabulary="coco")
    assert (s.mentions, s.hallucinated_mentions, s.chair_s) == (3, 1, 1.0)
    assert len(COCO_CATEGORIES) == 80
    assert plural("bus") == "buses" and plural("knife") == "knives" and plural("person") == "people"


def test_choice_credit_never_favours_the_first_option():
    options = list(COLORS)
    assert choice_credit(dict.fromkeys(options, 0.3), "red") == pytest.approx(1 / len(options))
    assert choice_credit({"red": 0.2, "blue": 0.9}, "blue") == 1.0
    assert choice_credit({"red": 0.9, "blue": 0.9}, "blue") == 0.5  # a tie is 1/2, whichever came first
    assert choice_credit({}, "red") == 0.0


def test_vqa_hand_computed_and_constant_answer_at_chance():
    qs = [{"answer": c, "task": "color", "answer_type": "color"} for c in COLORS]
    s = score_vqa(qs, ["red"] * len(qs))
    assert s.by_task["color"].accuracy == pytest.approx(1 / len(COLORS))
    listing = " ".join(COLORS)  # naming every option scores exactly chance
    assert score_vqa(qs, [listing] * len(qs)).accuracy == pytest.approx(1 / len(COLORS))
    mixed = [
        {"answer": "3", "task": "count", "answer_type": "number"},
        {"answer": "No", "task": "existence", "answer_type": "yes_no"},
        {"answer": "top left", "task": "position", "answer_type": "region"},
        {"answer": "crosses", "task": "shape", "answer_type": "shape"},
        {"answer": "pink hexagon", "task": "size", "answer_type": "object"},
        {"answer": "a long text", "task": "detail", "answer_type": "free"},
    ]
    answers = ["three", "There isn't one.", "At the top left.", "two or three plus signs", "the hexagon", "x"]
    s = score_vqa(mixed, answers)
    assert s.skipped == 1 and s.n == 5
    assert s.by_task["count"].accuracy == 1.0
    assert s.by_task["existence"].accuracy == 1.0
    assert s.by_task["position"].accuracy == 1.0  # "top left", not "top" and "left"
    assert s.by_task["shape"].accuracy == 1.0  # "plus signs" is a cross
    assert s.by_task["size"].unparseable == 1  # a bare shape does not name a coloured object
    assert s.accuracy == pytest.approx(4 / 5)


def test_numbers_and_options():
    assert find_numbers("two, maybe 3") == {2, 3}
    assert find_numbers("No, there are two.") == {2}
    assert find_options("at the top left", ["top", "left", "top left"]) == {"top left"}


def test_ocr_exact_match_and_anls_hand_computed():
    assert levenshtein("kitten", "sitting") == 3
    assert anls_one('"STOP."', ["stop"]) == 1.0
    assert anls_one("$4.76", ["$4.75"]) == pytest.approx(1 - 1 / 5)
    assert anls_one("bakery", ["library"]) == 0.0  # distance 4/7 >= 0.5
    s = score_ocr(["STOP", ["Bakery", "the bakery"], "$4.75"], ["stop", "the Bakery", "$4.76"])
    assert s.exact_match == pytest.approx(2 / 3)
    assert s.anls == pytest.approx((1 + 1 + 0.8) / 3)


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("The answer is right.\nRating: 5", 5),
        ("**Rating:** 2/6", 2),
        ("4", 4),
        ("Rating: 3. On reflection, Rating: 4", None),  # two different ratings: never pick the first
        ("Rating: 9", None),
        ("I cannot rate this.", None),
    ],
)
def test_judge_rating_parsing(reply, rating):
    assert parse_rating(reply) == rating


def test_judge_scores_report_unparseable_instead_of_zero():
    s = score_judge(["Rating: 6", "Rating: 1", "Rating: 2", "no idea"])
    assert (s.n, s.rated, s.unparseable) == (4, 3, 1)
    assert s.hallucination_rate == pytest.approx(2 / 3)
    assert s.mean_rating == pytest.approx(3.0)
    assert s.histogram[6] == 1 and s.histogram[0] == 0


def test_answers_that_reason_first_are_scored_on_their_final_part():
    from evals.parsing import final_answer
    from evals.vqa import answer_credit

    reasoned = "I see a red star and no circles. Answer: No."
    assert final_answer(reasoned) == "No."
    assert final_answer("No, there is none.") == "No, there is none."  # nothing to split: the whole text
    assert final_answer("answer: 3. Answer : 4") == "4"  # the last marker wins
    assert score_pope(["no"], [reasoned]).accuracy == 1.0  # the "no" of "no circles" is not the answer
    assert answer_credit("color", "red", "I see a red star and a blue circle. Answer: red")[0] == 1.0
    assert answer_credit("color", "blue", "I see a red star and a blue circle. Answer: red")[0] == 0.0


def test_texts_hand_computed_on_the_scenes_texts():
    descriptions = [
        'Two objects. The word "OPEN" is written at the top.',  # right (case ignored below)
        'One object. The number "21" is written on the right.',  # invented: the scene has no text
        'One object. A sign says "SALE". The number "7" is written below.',  # one right, one invented
        "No text mentioned.",
    ]
    s = score_texts(descriptions, [["open"], [], ["SALE"], ["HI"]])
    assert (s["stated"], s["right"], s["descriptions_with_invented"]) == (4, 2, 2)
    assert s["per_description"] == 1.0 and s["invented_per_description"] == 0.5


def test_repeats_count_sentences_said_again_within_one_description():
    descriptions = [
        "There is a red star at the top. There is a red star  at the top! There is a blue circle. there is a RED star at the top.",
        "There is a red star at the top. The star is above the circle.",  # nothing said twice
        "The star is left of the circle. The circle is right of the star.",  # the same fact, other words: not counted
        "",
    ]
    s = score_repeats(descriptions)
    assert (s["repeated_sentences"], s["descriptions_with_repeats"]) == (2, 1)
    assert s["per_description"] == 0.5
    assert score_repeats(["A. A. A."])["repeated_sentences"] == 2
