"""Tasks: registry, phrasing variety, balanced yes/no, grounded answers, hallucinated rejections."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import pytest

from assistant.toyworld import (
    PRESETS,
    TASKS,
    Scene,
    build_records,
    canonical_shapes,
    generate_scene,
    get_task,
)
from assistant.toyworld.describe import describe
from assistant.toyworld.records import ChairItem, Conversation, PopeQuestion, PreferencePair
from assistant.toyworld.relations import count, largest, region, relation, smallest
from assistant.toyworld.templates import TEMPLATES
from assistant.toyworld.vocab import COLOR_NAMES, PLURALS, SHAPE_SYNONYMS, SHAPES, SIZES, chair_words


@lru_cache(maxsize=4)
def scenes(preset: str = "tiny", n: int = 200) -> tuple[Scene, ...]:
    return tuple(generate_scene(s, PRESETS[preset]) for s in range(n))


def by_seed(preset: str = "tiny") -> dict[int, Scene]:
    return {s.seed: s for s in scenes(preset)}


def test_registry_names_and_refusal() -> None:
    assert {"caption", "instruct", "preference", "pope", "chair", "ocr"} <= set(TASKS)
    with pytest.raises(ValueError, match=r"unknown task 'x'; choose from \["):
        get_task("x")


def test_every_template_kind_has_several_phrasings() -> None:
    for key, phrasings in TEMPLATES.items():
        assert len(set(phrasings)) >= 3, key


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_builds_and_is_deterministic(name: str) -> None:
    few = scenes("tiny")[:40]
    a, b = build_records(name, few, 0), build_records(name, few, 0)
    assert a and a == b
    assert build_records(name, few, 1) != a or name in ("chair",)


def test_questions_vary_in_phrasing() -> None:
    qs = [qa.question for c in build_records("count", scenes(), 0) for qa in c.turns]
    assert len({re.sub(r"\b(red|orange|yellow|green|blue|purple|pink|brown)\b", "C", q) for q in qs}) >= 10


def _turns(name: str, preset: str = "tiny") -> list[tuple[Scene, object]]:
    seeds = by_seed(preset)
    return [(seeds[c.scene_seed], qa) for c in build_records(name, scenes(preset), 0) for qa in c.turns]


def test_answers_are_short_canonical_and_grounded() -> None:
    for scene, qa in _turns("instruct"):
        assert qa.task and qa.answer_type
        if qa.answer_type == "number":
            assert qa.answer.isdigit()
        if qa.answer_type == "yes_no":
            assert qa.answer in ("Yes", "No")
        if qa.answer_type == "color":
            assert qa.answer in COLOR_NAMES and any(o.color == qa.answer for o in scene.objects)
        if qa.answer_type == "shape":
            assert qa.answer in SHAPES and any(o.shape == qa.answer for o in scene.objects)
        if qa.task == "count" and qa.question.startswith(("How many objects", "Count the objects")):
            assert qa.answer == str(len(scene.objects))


def test_count_answers_match_ground_truth() -> None:
    for scene, qa in _turns("count"):
        m = re.search(r"(?:many|Count the|number of) (\w+)(?: (\w+))?", qa.question)
        assert m
        words = [w for w in m.groups() if w]
        color = next((w for w in words if w in COLOR_NAMES), None)
        shape = next((s for s, p in PLURALS.items() if p in words), None)
        if shape or color:
            assert qa.answer == str(count(scene, shape=shape, color=color)), qa


def test_existence_yes_no_balanced() -> None:
    answers = Counter(qa.answer for _, qa in _turns("existence"))
    assert abs(answers["Yes"] - answers["No"]) <= 0.05 * sum(answers.values()), answers
    for scene, qa in _turns("existence"):
        what = (
            re.search(r"(?:there|contain|see|Is) an? (.+?)(?: in| present|\?)", qa.question).group(1).split()
        )
        shape, color = what[-1], (what[0] if len(what) == 2 else None)
        assert qa.answer == ("Yes" if count(scene, shape=shape, color=color) else "No"), qa


def test_pope_balanced_per_category_and_correct() -> None:
    recs = build_records("pope", scenes(), 0)
    seeds = by_seed()
    assert all(isinstance(r, PopeQuestion) for r in recs)
    per = Counter((r.category, r.label) for r in recs)
    for cat in ("random", "popular", "adversarial"):
        assert per[(cat, "yes")] == per[(cat, "no")] > 50, per
    for r in recs:
        words = r.object.split()
        shape, color = words[-1], (words[0] if len(words) == 2 else None)
        assert r.label == ("yes" if count(seeds[r.scene_seed], shape=shape, color=color) else "no")
        assert r.text == f"Is there {'an' if r.object[0] in 'aeiou' else 'a'} {r.object} in the image?"
    # adversarial negatives are mostly the same shape in another colour
    adv = [r for r in recs if r.category == "adversarial" and r.label == "no"]
    same = sum(1 for r in adv if any(o.shape == r.object.split()[-1] for o in seeds[r.scene_seed].objects))
    assert same >= len(adv) // 2


def test_preference_rejected_contradicts_ground_truth() -> None:
    recs = build_records("preference", scenes(), 0)
    assert {r.hallucination for r in recs} == {"object", "attribute", "count"}
    for r in recs:
        assert isinstance(r, PreferencePair) and r.chosen != r.rejected
        if r.task == "count":
            assert r.chosen.isdigit() and r.rejected.isdigit() and int(r.rejected) != int(r.chosen)
        if r.task == "detail":
            assert r.chosen == describe(by_seed()[r.scene_seed])
        if r.task == "existence":
            assert (r.chosen, r.rejected) == ("No", "Yes")
            assert "Is" in r.question or "Does" in r.question or "Can" in r.question


def test_balanced_preference_counts_err_as_often_down_as_up() -> None:
    """The default's wrong counts lean up; the balanced task's do not (docs/recipe.md, session 9)."""

    def up_share(task: str) -> float:
        pairs = [
            (int(r.chosen), int(r.rejected))
            for r in build_records(task, scenes("tiny", 2000), 0)
            if r.task == "count" and int(r.chosen) > 0
        ]
        assert len(pairs) > 100
        return sum(rejected > chosen for chosen, rejected in pairs) / len(pairs)

    assert 0.4 < up_share("preference_balanced") < 0.6
    assert up_share("preference") > 0.6


def test_keep_count_preference_descriptions_state_the_true_count_and_invent_an_object() -> None:
    from assistant.toyworld import chair_words
    from training.rewards import mentioned_objects, stated_count

    seeds = by_seed()
    details = [r for r in build_records("preference_keep_count", scenes(), 0) if r.task == "detail"]
    assert details and {r.hallucination for r in details} <= {"swap", "attribute", "object"}
    swaps = [r for r in details if r.hallucination == "swap"]
    assert len(swaps) > len(details) / 2
    for r in details:
        n = len(seeds[r.scene_seed].objects)
        assert stated_count(r.rejected) == stated_count(r.chosen) == n or (
            n == 0 and r.hallucination == "object"
        )
    for r in swaps:  # the rejected description names a shape or colour-shape the scene does not hold
        truth = {(o.color, o.shape) for o in seeds[r.scene_seed].objects}
        assert set(mentioned_objects(r.rejected)) - truth and chair_words(r.rejected)


def test_chair_ground_truth_and_synonyms() -> None:
    seeds = by_seed()
    for item in build_records("chair", scenes()[:50], 0):
        assert isinstance(item, ChairItem)
        scene = seeds[item.scene_seed]
        assert set(item.objects) == {o.shape for o in scene.objects}
        assert canonical_shapes(item.reference) == set(item.objects)  # the reference never hallucinates
    text = "Two boxes, a disc, three plus signs, a rhombus, some Balls and a boxer near a hexagon."
    assert canonical_shapes(text) == {"square", "circle", "cross", "diamond", "hexagon"}
    assert ("plus signs", "cross") in chair_words(text)
    owners = Counter(w for words in SHAPE_SYNONYMS.values() for w in words)
    assert all(n == 1 for n in owners.values()), "a synonym belongs to two shapes"
    for shape, plural in PLURALS.items():
        assert canonical_shapes(plural) == {shape}


def test_ocr_questions_read_the_scene_text() -> None:
    turns = _turns("ocr", "ocr")
    assert len({qa.question for _, qa in turns}) >= 8
    for scene, qa in turns:
        texts = [t.text for t in scene.texts]
        if qa.answer_type == "text":
            assert all(part in " ".join(texts) for part in qa.answer.split(" ")), (qa, texts)


def test_multiturn_conversations_have_several_turns() -> None:
    convs = build_records("multiturn", scenes(), 0)
    assert all(isinstance(c, Conversation) for c in convs)
    seeds = by_seed()
    busy = [c for c in convs if len(seeds[c.scene_seed].objects) >= 2]
    assert sum(len(c.turns) >= 3 for c in busy) >= 0.9 * len(busy)
    assert len({qa.task for c in convs for qa in c.turns}) >= 6


def test_sft_mix_asks_by_shape_and_unkeyed_and_stays_balanced() -> None:
    """The sft_mix ablation: every answer grounded, yes/no balanced, questions that name no colour."""
    turns = _turns("sft_mix")
    tasks = Counter(qa.task for _, qa in turns)
    assert {"inventory", "caption", "detail", "existence", "count", "color", "shape", "ocr"} <= set(tasks)
    for scene, qa in turns:
        ordered = sorted(scene.objects, key=lambda o: (o.box[0], o.box[1]))
        if qa.task == "inventory":
            attr = "color" if re.search(r"colou?r", qa.question) else "shape"
            assert qa.answer.replace(" and ", ", ").split(", ") == list(
                dict.fromkeys(getattr(o, attr) for o in ordered)
            )
        if qa.answer_type in ("shape", "color") and " the object" in qa.question:  # unkeyed: lone object only
            assert len(scene.objects) == 1 and qa.answer == getattr(scene.objects[0], qa.answer_type)
        if qa.question.startswith("Is there any text") or qa.question.startswith("Is anything written"):
            assert qa.answer == ("Yes" if scene.texts else "No")
    bare = [
        (scene, qa)
        for scene, qa in turns
        if qa.task == "existence" and re.search(r" an? (\w+) (in|present)", qa.question)
    ]
    assert len(bare) >= 30
    for scene, qa in bare:
        shape = re.search(r" an? (\w+) (in|present)", qa.question).group(1)
        if shape in PLURALS:
            assert qa.answer == ("Yes" if count(scene, shape=shape) else "No"), qa
    for kind in ("existence", "ocr"):
        answers = Counter(qa.answer for _, qa in turns if qa.task == kind and qa.answer_type == "yes_no")
        assert answers["No"] >= 0.3 * sum(answers.values()), (kind, answers)
    existence = Counter(qa.answer for _, qa in turns if qa.task == "existence")
    assert abs(existence["Yes"] - existence["No"]) <= 0.1 * sum(existence.values()), existence


def test_instruct_the_eval_mix_never_asks_reading_questions_without_text() -> None:
    # instruct makes the skill-VQA eval sets: it must not change under the training mix's levers
    for scene, qa in _turns("instruct"):
        assert qa.task != "ocr" or scene.texts
        assert qa.task not in ("inventory", "caption")


def test_instruct_keyed_lists_the_objects_before_answering():
    from assistant.toyworld.describe import object_summary
    from evals.parsing import final_answer

    turns = _turns("instruct_keyed")
    keyed = [(scene, qa) for scene, qa in turns if qa.task in ("color", "existence", "shape")]
    assert keyed and all(qa.answer.startswith("I see ") for _, qa in keyed)
    for scene, qa in keyed:
        listed = object_summary(scene) if scene.objects else "no objects"
        assert qa.answer.startswith(f"I see {listed}. Answer: ")
        assert final_answer(qa.answer) in COLOR_NAMES + ("Yes", "No") + tuple(SHAPES)
    assert all(
        not qa.answer.startswith("I see") for _, qa in turns if qa.task in ("count", "position", "size")
    )


def test_rl_detail_asks_one_description_per_scene():
    turns = _turns("rl_detail")
    assert len(turns) == len(scenes()) and all(
        qa.task == "detail" and qa.answer_type == "free" for _, qa in turns
    )


def test_rl_detail_varied_asks_in_the_varied_phrasings_and_never_the_chair_prompt():
    from evals.config import CHAIR_PROMPT

    turns = _turns("rl_detail_varied")
    assert len(turns) == len(scenes()) and all(
        qa.task == "detail" and qa.answer_type == "free" for _, qa in turns
    )
    asked = {qa.question for _, qa in turns}
    assert asked <= set(TEMPLATES["detail_varied"]) and len(asked) > len(TEMPLATES["detail"])
    assert CHAIR_PROMPT not in asked


def test_rl_detail_count_mixes_counting_questions_into_descriptions():
    turns = _turns("rl_detail_count")
    counts = [qa for _, qa in turns if qa.task == "count"]
    assert len(turns) == len(scenes())
    assert all(qa.task in ("detail", "count") for _, qa in turns)
    assert 0.1 * len(turns) <= len(counts) <= 0.3 * len(turns)
    assert all(qa.answer_type == "number" and qa.answer.isdigit() for qa in counts)  # the reward parses it


@pytest.mark.parametrize(
    ("task", "phrasings"), [("rl_detail_mix", "detail"), ("rl_detail_varied_mix", "detail_varied")]
)
def test_rl_detail_mix_asks_descriptions_and_short_questions_with_exact_answers(task, phrasings):
    from evals.config import CHAIR_PROMPT

    turns = _turns(task)
    short = [qa for _, qa in turns if qa.task != "detail"]
    assert len(turns) == len(scenes())
    assert 0.25 * len(turns) <= len(short) <= 0.55 * len(turns)
    assert {qa.task for qa in short} >= {"existence", "color", "count"}
    assert all(qa.answer_type != "free" and qa.task != "ocr" for qa in short)  # the reward parses each
    asked = {qa.question for _, qa in turns if qa.task == "detail"}
    assert asked <= set(TEMPLATES[phrasings]) and CHAIR_PROMPT not in asked


def test_rl_detail_varied_sized_asks_the_colour_of_an_object_named_by_its_size():
    turns = _turns("rl_detail_varied_sized")
    sized = [(scene, qa) for scene, qa in turns if qa.task == "color"]
    assert len(turns) == len(scenes()) and {qa.task for _, qa in turns} == {"detail", "color"}
    assert 0.1 * len(turns) <= len(sized) <= 0.4 * len(turns)
    for scene, qa in sized:
        size, shape = re.search(r"\b(small|medium|large) (\w+)\b", qa.question).groups()
        same_shape = [o for o in scene.objects if o.shape == shape]
        named = [o for o in same_shape if o.size == size]
        assert len(same_shape) >= 2 and len(named) == 1 and qa.answer == named[0].color
        assert qa.answer_type == "color"  # scored exactly by the reward


def test_instruct_dense_asks_many_questions_per_image_including_text_free_ocr():
    convs = build_records("instruct_dense", scenes(), 0)
    seeds = by_seed()
    assert sum(len(c.turns) for c in convs) >= 6 * len(convs)  # instruct: 1-4
    assert all(len({qa.question for qa in c.turns}) == len(c.turns) for c in convs)  # no question repeats
    text_free = [qa for c in convs for qa in c.turns if qa.task == "ocr" and not seeds[c.scene_seed].texts]
    assert text_free and all(qa.answer == "No" for qa in text_free)  # "is there any text?" -> "No"


def test_color_all_asks_the_colour_of_every_object_its_shape_names():
    convs = build_records("color_all", scenes(), 0)
    seeds = by_seed()
    assert sum(len(c.turns) for c in convs) >= 2 * len(convs)  # several per image (color: one)
    for conv in convs:
        objects = seeds[conv.scene_seed].objects
        asked = []
        for qa in conv.turns:
            assert qa.task == "color" and not any(c in qa.question.lower() for c in COLOR_NAMES)
            # the name is the shape, or size + shape, and picks out exactly one object: the answer is its colour
            sized = [o for o in objects if f"{o.size} {o.shape}" in qa.question]
            hits = sized or [o for o in objects if re.search(rf"\b{o.shape}\b", qa.question)]
            assert len(hits) == 1 and qa.answer == hits[0].color
            asked.append(hits[0])
        assert len(set(map(id, asked))) == len(asked)  # no object asked twice


def test_keyed_adds_region_existence_and_count_by_shape_to_color_all():
    convs = build_records("keyed", scenes(), 0)
    seeds = by_seed()
    assert len(convs) == len(scenes())  # every scene, objects or not
    for conv in convs:
        scene = seeds[conv.scene_seed]
        *colors, exists, counted = conv.turns
        if colors and colors[-1].task == "position":
            where = colors.pop()
            assert where.answer_type == "region" and not any(c in where.question.lower() for c in COLOR_NAMES)
            assert where.answer in {region(scene, o) for o in scene.objects if o.shape in where.question}
        assert all(qa.task == "color" for qa in colors)
        assert exists.task == "existence" and exists.answer in ("Yes", "No")
        shape = next(s for s in SHAPES if PLURALS[s] in counted.question)
        assert counted.answer == str(count(scene, shape=shape))


def test_keyed_detail_opens_half_the_keyed_conversations_with_the_scene_description():
    convs = build_records("keyed_detail", scenes(), 0)
    seeds = by_seed()
    assert len(convs) == len(scenes())
    opened = [c for c in convs if c.turns[0].task == "detail"]
    assert 0.35 < len(opened) / len(convs) < 0.65
    for conv in opened:
        assert conv.turns[0].answer == describe(seeds[conv.scene_seed])
        assert all(qa.task != "detail" for qa in conv.turns[1:])
    assert all(c.turns[-1].task == "count" and c.turns[-2].task == "existence" for c in convs)


def test_dense_all_asks_every_focus_skill_of_a_scene_in_one_conversation():
    pool = scenes("standard", 300)
    seeds = {s.seed: s for s in pool}
    convs = build_records("dense_all", pool, 0)
    colors = {c.scene_seed: c for c in build_records("color_all", pool, 0)}
    regions = {c.scene_seed: c for c in build_records("region_all", pool, 0)}
    assert {c.task for c in convs} == {"dense_all"} and len(convs) == len(pool)
    for conv in convs:
        scene = seeds[conv.scene_seed]
        by_task = Counter(qa.task for qa in conv.turns)
        # color_all's and region_all's answers, all of them; the many-turn skills capped
        asked = sorted(
            qa.answer
            for qa in conv.turns
            if qa.task == "color" and "larger" not in qa.question and "smaller" not in qa.question
        )
        assert (
            asked == sorted(t.answer for t in colors[conv.scene_seed].turns)
            if conv.scene_seed in colors
            else not asked
        )
        where = sorted(qa.answer for qa in conv.turns if qa.answer_type == "region")
        assert (
            where == sorted(t.answer for t in regions[conv.scene_seed].turns)
            if conv.scene_seed in regions
            else not where
        )
        assert by_task["count"] <= 3 and by_task["existence"] <= 4
        assert by_task["position"] - len(where) <= 4  # relations
        for qa in conv.turns:
            if qa.task == "count":
                shape = next((s for s in SHAPES if PLURALS[s] in qa.question), None)
                if shape:
                    assert qa.answer == str(count(scene, shape=shape))
    kinds = Counter(qa.task for c in convs for qa in c.turns)
    assert set(kinds) == {"color", "position", "count", "existence"}
    assert sum(kinds.values()) / len(convs) > 10  # one image's tokens carry many answers


def test_dense_detail_opens_half_the_dense_conversations_with_the_scene_description():
    convs = build_records("dense_detail", scenes(), 0)
    seeds = by_seed()
    assert {c.task for c in convs} == {"dense_detail"}
    opened = [c for c in convs if c.turns[0].task == "detail"]
    assert 0.35 < len(opened) / len(convs) < 0.65
    assert all(c.turns[0].answer == describe(seeds[c.scene_seed]) for c in opened)
    assert all(qa.task != "detail" for c in convs for qa in c.turns[1:])


def test_position_detail_opens_half_the_position_conversations_with_the_scene_description():
    from evals.config import CHAIR_PROMPT

    convs = build_records("position_detail", scenes(), 0)
    plain = {c.scene_seed: c for c in build_records("position_all", scenes(), 0)}
    seeds = by_seed()
    assert {c.scene_seed for c in convs} == set(plain) and {c.task for c in convs} == {"position_detail"}
    opened = [c for c in convs if c.turns[0].task == "detail"]
    assert 0.35 < len(opened) / len(convs) < 0.65
    for conv in opened:
        assert conv.turns[0].answer == describe(seeds[conv.scene_seed])
        assert conv.turns[0].question in TEMPLATES["detail_varied"] and conv.turns[0].question != CHAIR_PROMPT
    assert all(qa.task == "position" for c in convs for qa in c.turns[c.turns[0].task == "detail" :])
    # the position turns are position_all's kinds, as many per image
    n_turns = sum(len(c.turns) - (c.turns[0].task == "detail") for c in convs)
    assert abs(n_turns / sum(len(c.turns) for c in plain.values()) - 1) < 0.1


def test_instruct_varied_posdetail_gives_one_scene_in_six_a_position_detail_conversation():
    convs = build_records("instruct_varied_posdetail", scenes(), 0)
    position = [c for c in convs if c.task == "position_detail"]
    assert 0.1 < len(position) / len(scenes()) < 0.25
    assert {c.task for c in convs} - {"position_detail"} <= {"instruct_varied", "count_all", "exists_all"}


def test_detail_many_holds_out_the_chair_prompt_and_every_phrasing_one_part_from_it():
    from assistant.toyworld.templates import DETAIL_PARTS, HELD_OUT_DETAIL
    from evals.config import CHAIR_PROMPT

    many = TEMPLATES["detail_many"]
    assert len(many) > 1000 and len(set(many)) == len(many) and set(TEMPLATES["detail_varied"]) <= set(many)
    opening, verb, obj, ending = HELD_OUT_DETAIL
    assert f"{opening}{verb} {obj}{ending}." == CHAIR_PROMPT
    near = {CHAIR_PROMPT}
    for slot, parts in enumerate(DETAIL_PARTS):
        for part in parts:
            held = list(HELD_OUT_DETAIL)
            held[slot] = part[0] if slot == 0 else part
            stop = dict(DETAIL_PARTS[0])[held[0]]
            text = f"{held[0]}{held[1]} {held[2]}{held[3]}{stop}"
            near.add(text[:1].upper() + text[1:])
    assert (
        "Can you describe this image in detail?" in near and "Please describe this picture in detail." in near
    )
    assert not near & set(many)


def test_instruct_many_pos_asks_for_descriptions_in_detail_many():
    from evals.config import CHAIR_PROMPT

    asked = [qa.question for _, qa in _turns("instruct_many_pos", "standard") if qa.task == "detail"]
    assert (
        len(set(asked)) > 3 * len(TEMPLATES["detail_varied"])
        and set(asked) <= set(TEMPLATES["detail_many"])
        and CHAIR_PROMPT not in asked
    )
    convs = build_records("instruct_many_pos", scenes(), 0)
    assert 0.1 < sum(c.task == "position_detail" for c in convs) / len(convs) < 0.25
    assert {c.task for c in convs} <= {"position_detail", "instruct_many", "count_all", "exists_all"}


def test_color_position_detail_asks_color_all_and_position_all_of_a_scene_in_one_conversation():
    from evals.config import CHAIR_PROMPT

    convs = build_records("color_position_detail", scenes(), 0)
    colors = {c.scene_seed: c for c in build_records("color_all", scenes(), 0)}
    positions = {c.scene_seed: c for c in build_records("position_all", scenes(), 0)}
    seeds = by_seed()
    assert {c.scene_seed for c in convs} == set(colors) | set(positions)
    assert {c.task for c in convs} == {"color_position_detail"}
    opened = [c for c in convs if c.turns[0].task == "detail"]
    assert 0.35 < len(opened) / len(convs) < 0.65
    for conv in opened:
        assert conv.turns[0].answer == describe(seeds[conv.scene_seed])
        assert conv.turns[0].question in TEMPLATES["detail_many"] and conv.turns[0].question != CHAIR_PROMPT
    for conv in convs:
        asked = conv.turns[conv.turns[0].task == "detail" :]
        kinds = Counter(qa.task for qa in asked)
        assert set(kinds) <= {"color", "position"}
        # every object its shape names is asked its colour, as color_all asks: the same turns, shuffled in
        color_all = colors.get(conv.scene_seed)
        assert kinds["color"] == (len(color_all.turns) if color_all else 0)
        for qa in asked:
            if qa.task == "color":
                scene = seeds[conv.scene_seed]
                assert qa.answer in {
                    o.color for o in scene.objects if re.search(rf"\b{o.shape}\b", qa.question)
                }
    # as many position turns as position_all's, within sampling noise (its relation pairs are drawn anew)
    n_position = sum(qa.task == "position" for c in convs for qa in c.turns)
    assert abs(n_position / sum(len(c.turns) for c in positions.values()) - 1) < 0.1


def test_shape_all_asks_the_shape_of_every_object_its_colour_names():
    convs = build_records("shape_all", scenes(), 0)
    seeds = by_seed()
    assert sum(len(c.turns) for c in convs) >= 2 * len(convs)
    for conv in convs:
        objects = seeds[conv.scene_seed].objects
        asked = []
        for qa in conv.turns:
            assert qa.task == "shape" and not any(re.search(rf"\b{s}\b", qa.question) for s in SHAPES)
            # the name is the colour, or size + colour, and picks out exactly one object: the answer is its shape
            sized = [o for o in objects if f"{o.size} {o.color} object" in qa.question]
            hits = sized or [o for o in objects if re.search(rf"\b{o.color} object\b", qa.question)]
            assert len(hits) == 1 and qa.answer == hits[0].shape
            asked.append(hits[0])
        assert len(set(map(id, asked))) == len(asked)  # no object asked twice
        # every object its colour alone names is asked
        lone = [o for o in objects if count(seeds[conv.scene_seed], color=o.color) == 1]
        assert all(any(o is a for a in asked) for o in lone)


def test_instruct_many_compare3_shapes_gives_one_scene_in_four_a_shape_conversation():
    convs = build_records("instruct_many_compare3_shapes", scenes("standard", 400), 0)
    tasks = Counter(c.task for c in convs)
    assert 0.15 < tasks["shape_detail"] / len(convs) < 0.35
    shape = [c for c in convs if c.task == "shape_detail"]
    assert all(qa.task == "shape" for c in shape for qa in c.turns[c.turns[0].task == "detail" :])
    assert 0.3 < sum(c.turns[0].task == "detail" for c in shape) / len(shape) < 0.7
    assert {"color_size_compare", "position_detail", "instruct_many"} <= set(tasks)  # compare3's for the rest


def test_instruct_many_keyed_adds_a_color_conversation_to_instruct_many_pos():
    convs = build_records("instruct_many_keyed", scenes("standard", 400), 0)
    tasks = Counter(c.task for c in convs)
    assert set(tasks) <= {"position_detail", "color_detail", "instruct_many", "count_all", "exists_all"}
    assert (
        0.1 < tasks["position_detail"] / len(convs) < 0.25
        and 0.08 < tasks["color_detail"] / len(convs) < 0.22
    )
    color = [c for c in convs if c.task == "color_detail"]
    assert all(qa.task == "color" for c in color for qa in c.turns[c.turns[0].task == "detail" :])
    assert 0.3 < sum(c.turns[0].task == "detail" for c in color) / len(color) < 0.7


def test_count_all_asks_every_shape_and_colour_count_and_one_absent_of_each():
    convs = build_records("count_all", scenes(), 0)
    seeds = by_seed()
    assert len(convs) == len(scenes())  # every scene has an absent shape and colour to ask about
    repeated = 0
    for conv in convs:
        scene = seeds[conv.scene_seed]
        asked = set()
        for qa in conv.turns:
            assert qa.task == "count" and qa.answer_type == "number"
            color = next((c for c in COLOR_NAMES if f"{c} objects" in qa.question), None)
            shape = next((s for s in SHAPES if PLURALS[s] in qa.question), None)
            assert (color is None) != (shape is None)
            assert qa.answer == str(count(scene, shape=shape, color=color))
            asked.add((shape, color))
        present = {(o.shape, None) for o in scene.objects} | {(None, o.color) for o in scene.objects}
        assert (
            len(asked) == len(conv.turns) and present <= asked and len(asked - present) == 2
        )  # + 1 absent each
        repeated += any(int(qa.answer) >= 2 for qa in conv.turns)
    assert repeated > 0.2 * len(convs)  # the point of the task: counts above one


def test_exists_all_asks_every_shape_and_object_and_as_many_absent_ones():
    convs = build_records("exists_all", scenes(), 0)
    seeds = by_seed()
    crossed = 0
    for conv in convs:
        scene = seeds[conv.scene_seed]
        pairs = {(o.color, o.shape) for o in scene.objects}
        yes_no = Counter()
        for qa in conv.turns:
            assert qa.task == "existence" and qa.answer_type == "yes_no"
            color = next((c for c in COLOR_NAMES if re.search(rf"\b{c}\b", qa.question)), None)
            shape = next(s for s in SHAPES if re.search(rf"\b{s}\b", qa.question))
            present = (color, shape) in pairs if color else any(shape == s for _, s in pairs)
            assert qa.answer == ("Yes" if present else "No"), qa.question
            if color and not present:  # a "No" pair is a present colour on a present shape, never together
                assert any(c == color for c, _ in pairs) and any(s == shape for _, s in pairs)
                crossed += 1
            yes_no[(color is None, qa.answer)] += 1
        assert yes_no[(True, "Yes")] == len({s for _, s in pairs}) >= yes_no[(True, "No")]
        assert yes_no[(False, "Yes")] == len(pairs) >= yes_no[(False, "No")]
    assert crossed > len(convs)  # the point of the task: POPE's hardest negatives


def test_instruct_varied_all_mixes_count_all_and_exists_all_into_instruct_varied():
    convs = build_records("instruct_varied_all", scenes(), 0)
    tasks = Counter(c.task for c in convs)
    assert len(convs) > 0.95 * len(scenes()) and set(tasks) == {"instruct_varied", "count_all", "exists_all"}
    assert 0.1 < tasks["count_all"] / len(convs) < 0.25 and 0.1 < tasks["exists_all"] / len(convs) < 0.25, (
        tasks
    )
    opened = [c.turns[0].task == "detail" for c in convs if c.task == "exists_all"]
    assert (
        0.25 < sum(opened) / len(opened) < 0.75
    )  # half the exists_all conversations open with a description


def test_region_all_asks_where_every_uniquely_named_object_is():
    convs = build_records("region_all", scenes(), 0)
    seeds = by_seed()
    assert sum(len(c.turns) for c in convs) >= 2 * len(convs)
    for conv in convs:
        objects = seeds[conv.scene_seed].objects
        asked = []
        for qa in conv.turns:
            assert qa.task == "position" and qa.answer_type == "region"
            # the name (shape, colour + shape, or size + colour + shape) picks out exactly one object
            hits = [
                o for o in objects if re.search(rf"\b(?:{o.size} )?(?:{o.color} )?{o.shape}\b", qa.question)
            ]
            hits = [
                o for o in hits if all(w in f"{o.size} {o.color} {o.shape}" for w in _name_words(qa.question))
            ]
            assert len(hits) == 1 and qa.answer == region(seeds[conv.scene_seed], hits[0])
            asked.append(hits[0])
        assert len(set(map(id, asked))) == len(asked)


def _named(scene: Scene, question: str) -> list:
    """The objects a question names, in the order it names them (each name picks out exactly one object)."""
    names = re.findall(
        rf"(?:(?:{'|'.join(SIZES)}) )?(?:(?:{'|'.join(COLOR_NAMES)}) )?(?:{'|'.join(SHAPES)})\b", question
    )
    out = []
    for name in names:
        words = _name_words(name)
        hits = [
            o
            for o in scene.objects
            if o.shape == words[-1] and all(w in (o.size, o.color, o.shape) for w in words)
        ]
        assert len(hits) == 1, (question, name)
        out.append(hits[0])
    return out


@pytest.mark.parametrize("task", ["relation_all", "position_all"])
def test_relation_turns_are_answered_by_the_scenes_geometry(task):
    convs = build_records(task, scenes(), 0)
    seeds = by_seed()
    opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}
    kinds, yes = Counter(), Counter()
    for conv in convs:
        scene = seeds[conv.scene_seed]
        pairs = set()
        for qa in conv.turns:
            assert qa.task == "position"
            kinds[qa.answer_type] += 1
            if qa.answer_type == "region":
                continue
            a, b = _named(scene, qa.question)
            # "On which side of the {b} is the {a}" and "Relative to the {b}, is the {a} ..." name b first
            if qa.question.startswith(("On which side", "Relative to")):
                a, b = b, a
            pairs.add(frozenset((id(a), id(b))))
            holds = relation(a, b)
            if qa.answer_type == "relation":
                assert qa.answer in holds
                assert (
                    f"{qa.answer} or" in qa.question
                    or f"or {qa.answer}" in qa.question
                    or (f"or to the {qa.answer}" in qa.question)
                )
            else:
                said = next(
                    r for r in ("left", "right", "above", "below") if re.search(rf"\b{r}\b", qa.question)
                )
                assert qa.answer == ("Yes" if said in holds else "No")
                assert qa.answer == "Yes" or opposite[said] in holds  # a "No" is the opposite of a fact
                yes[qa.answer] += 1
        assert len(pairs) == sum(t.answer_type != "region" for t in conv.turns) <= 8  # a pair is asked once
    assert kinds["relation"] > 50 and kinds["yes_no"] > 50
    assert (kinds["region"] > 50) == (task == "position_all")
    assert 0.4 < yes["Yes"] / sum(yes.values()) < 0.6


def _name_words(question: str) -> list[str]:
    """The size, colour and shape words of a question."""
    vocab = {*COLOR_NAMES, *SHAPES, *SIZES}
    return [w for w in re.findall(r"[a-z]+", question.lower()) if w in vocab]


def test_instruct_varied_asks_for_descriptions_in_more_phrasings_never_the_chair_prompt():
    from evals.config import CHAIR_PROMPT

    asked = {qa.question for _, qa in _turns("instruct_varied", "standard") if qa.task == "detail"}
    assert set(TEMPLATES["detail"]) < set(TEMPLATES["detail_varied"])
    assert len(asked) > len(TEMPLATES["detail"]) and asked <= set(TEMPLATES["detail_varied"])
    assert CHAIR_PROMPT not in TEMPLATES["detail_varied"]  # the eval's prompt stays held out


def test_color_size_detail_asks_every_colour_color_all_asks_and_every_size_a_shape_or_colour_names():
    convs = build_records("color_size_detail", scenes(), 0)
    colors = {c.scene_seed: c for c in build_records("color_all", scenes(), 0)}
    seeds = by_seed()
    assert {c.task for c in convs} == {"color_size_detail"}
    opened = [c for c in convs if c.turns[0].task == "detail"]
    assert 0.35 < len(opened) / len(convs) < 0.65
    sized_colors = extremes = 0
    for conv in convs:
        scene = seeds[conv.scene_seed]
        asked = conv.turns[conv.turns[0].task == "detail" :]
        color_all = colors.get(conv.scene_seed)
        assert sum(qa.task == "color" for qa in asked) == (len(color_all.turns) if color_all else 0)
        for qa in asked:
            assert qa.task in {"color", "size"}
            if qa.task == "color":
                sized_colors += bool(re.search(r"\b(small|medium|large) ", qa.question))
            elif qa.answer_type == "object":  # which object is the largest / smallest: the clear one, by name
                extremes += 1
                which = largest(scene) if "largest" in qa.question else smallest(scene)
                assert which is not None and qa.answer == which.name
            else:  # the size of the one object the question names
                named = [o for o in scene.objects if re.search(rf"\b{o.shape}\b", qa.question)]
                colored = [o for o in named if re.search(rf"\b{o.color}\b", qa.question)]
                assert qa.answer == (colored or named)[0].size and len(colored or named) == 1
    assert sized_colors > 20 and extremes > 20


def test_instruct_many_sized_swaps_instruct_many_keyeds_colour_conversation_for_color_size_detail():
    convs = build_records("instruct_many_sized", scenes("standard", 400), 0)
    tasks = Counter(c.task for c in convs)
    assert set(tasks) <= {"position_detail", "color_size_detail", "instruct_many", "count_all", "exists_all"}
    assert 0.1 < tasks["position_detail"] / len(convs) < 0.25
    assert 0.08 < tasks["color_size_detail"] / len(convs) < 0.22


@pytest.mark.parametrize(
    ("task", "share"),
    [
        ("instruct_many_compare", 5 / 36),
        ("instruct_many_compare3", 5 / 18),
        ("instruct_many_compare2", 5 / 12),
    ],
)
def test_instruct_many_compare_swaps_the_colour_conversation_for_color_size_compare_at_its_share(task, share):
    convs = build_records(task, scenes("standard", 600), 0)
    tasks = Counter(c.task for c in convs)
    assert set(tasks) <= {"position_detail", "color_size_compare", "instruct_many", "count_all", "exists_all"}
    assert 0.1 < tasks["position_detail"] / len(convs) < 0.25
    assert abs(tasks["color_size_compare"] / len(convs) - share) < 0.06
    compared = [
        qa
        for c in convs
        if c.task == "color_size_compare"
        for qa in c.turns
        if "larger" in qa.question or "smaller" in qa.question
    ]
    assert compared and all(qa.task == "color" for qa in compared)


@pytest.mark.parametrize("task", ["focus_mix", "focus_mix_compare"])
def test_focus_mix_gives_each_scene_one_focus_conversation_by_weight(task):
    convs = build_records(task, scenes("standard", 400), 0)
    assert {c.task for c in convs} == {task}
    compared = [qa for c in convs for qa in c.turns if "larger" in qa.question or "smaller" in qa.question]
    assert bool(compared) == (
        task == "focus_mix_compare"
    )  # the colour of the larger / smaller one, asked outright
    kinds = Counter()
    for conv in convs:
        asked = {qa.task for qa in conv.turns} - {"detail"}
        if "size" in asked or asked == {"color"}:
            kinds["color_size_detail"] += 1
        elif asked == {"position"}:
            kinds["position_detail"] += 1
        elif asked == {"count"}:
            kinds["count_all"] += 1
        else:  # keyed: colour, where, whether and how many by shape in one conversation
            assert asked <= {"color", "position", "existence", "count"} and "existence" in asked
            kinds["keyed"] += 1
        # only colour-and-size and position conversations open with a description
        assert conv.turns[0].task != "detail" or asked <= {"color", "size"} or asked == {"position"}
    share = {kind: n / len(convs) for kind, n in kinds.items()}
    assert 0.3 < share["color_size_detail"] < 0.5 and 0.2 < share["position_detail"] < 0.4
    assert 0.08 < share["keyed"] < 0.25 and 0.08 < share["count_all"] < 0.25


def test_color_size_compare_crowded_asks_color_size_compare_of_scenes_of_four_or_more_objects_only():
    crowded = build_records("color_size_compare_crowded", scenes("standard", 300), 0)
    seeds = {s.seed: s for s in scenes("standard", 300)}
    assert crowded and {c.task for c in crowded} == {"color_size_compare"}
    assert all(len(seeds[c.scene_seed].objects) >= 4 for c in crowded)
    assert {c.scene_seed for c in crowded} == {s for s, scene in seeds.items() if len(scene.objects) >= 4}


def test_color_all_sparse_asks_color_all_of_scenes_of_two_or_three_objects_only():
    pool = scenes("tiny", 300)
    sparse = build_records("color_all_sparse", pool, 0)
    full = {c.scene_seed: c for c in build_records("color_all", pool, 0)}
    seeds = {s.seed: s for s in pool}
    assert sparse and {c.task for c in sparse} == {"color_all"}
    assert {c.scene_seed for c in sparse} == {s for s in full if 2 <= len(seeds[s].objects) <= 3}
    # color_all's questions for those scenes (its phrasings drawn anew)
    assert all(
        sorted(t.answer for t in c.turns) == sorted(t.answer for t in full[c.scene_seed].turns)
        for c in sparse
    )


def test_color_size_compare_adds_the_colour_of_the_larger_or_smaller_of_two_same_shape_objects():
    convs = build_records("color_size_compare", scenes(), 0)
    plain = {c.scene_seed: c for c in build_records("color_size_detail", scenes(), 0)}
    seeds = by_seed()
    assert {c.task for c in convs} == {"color_size_compare"}
    compared = 0
    for conv in convs:
        scene = seeds[conv.scene_seed]
        asked = [qa for qa in conv.turns if qa.task != "detail"]
        pairs = [re.search(r"\b(larger|smaller)\b", qa.question) for qa in asked]
        for qa, which in zip(asked, pairs, strict=True):
            if not which:
                continue
            compared += 1
            shape = next(s for s in SHAPES if re.search(rf"\b({s}|{PLURALS[s]})\b", qa.question))
            small, big = sorted((o for o in scene.objects if o.shape == shape), key=lambda o: o.area)
            assert big.area >= 1.2 * small.area and small.color != big.color
            assert qa.answer == (big if which.group(1) == "larger" else small).color
        base = plain.get(conv.scene_seed)  # the other turns are color_size_detail's questions
        other = [qa for qa, w in zip(asked, pairs, strict=True) if not w]
        assert len(other) == len([qa for qa in base.turns if qa.task != "detail"]) if base else not other
    assert compared > 10


@pytest.mark.parametrize(
    ("task", "inner"),
    [("color_size_compare_paired", "color_size_compare"), ("dense_detail_paired", "dense_detail")],
)
def test_paired_tasks_ask_only_of_scenes_where_a_size_names_an_object(task, inner):
    pool = scenes("tiny", 300)
    paired = build_records(task, pool, 0)
    full = build_records(inner, pool, 0)
    seeds = {s.seed: s for s in pool}
    assert paired and {c.task for c in paired} == {inner}
    # about a third of tiny scenes: a shape held twice in two sizes
    assert 0.15 < len(paired) / len(full) < 0.5
    sized = re.compile(r"\b(small|medium|large)\b|\b(larger|smaller)\b")
    for conv in paired:
        assert any(qa.answer_type == "color" and sized.search(qa.question) for qa in conv.turns), conv
    # and every scene with such a question is kept
    kept = {c.scene_seed for c in paired}
    for conv in full:
        if conv.scene_seed not in kept:
            scene = seeds[conv.scene_seed]
            assert not any(
                qa.answer_type == "color" and sized.search(qa.question) and qa.task == "color"
                for qa in conv.turns
            ), (scene, conv)


def test_color_by_size_asks_only_the_colour_of_objects_named_by_their_size():
    pool = scenes("tiny", 300)
    convs = build_records("color_by_size", pool, 0)
    paired = {c.scene_seed for c in build_records("color_size_compare_paired", pool, 0)}
    seeds = {s.seed: s for s in pool}
    assert convs and {c.task for c in convs} == {"color_by_size"}
    assert {c.scene_seed for c in convs} == paired
    sized = re.compile(r"\b(small|medium|large|larger|smaller)\b")
    for conv in convs:
        scene = seeds[conv.scene_seed]
        for qa in conv.turns:
            assert qa.answer_type == "color" and sized.search(qa.question), qa
            assert qa.answer in {o.color for o in scene.objects}


def _holding_a_key_twice(pool) -> set[int]:
    """The seeds of the scenes that hold a shape or a colour twice or more."""
    return {
        s.seed
        for s in pool
        if max(Counter(o.shape for o in s.objects).values(), default=0) >= 2
        or max(Counter(o.color for o in s.objects).values(), default=0) >= 2
    }


def test_multiples_counts_every_key_of_a_scene_holding_one_twice_ones_and_zeros_included():
    pool = scenes("tiny", 300)
    convs = build_records("multiples", pool, 0)
    seeds = {s.seed: s for s in pool}
    repeated = _holding_a_key_twice(pool)
    assert convs and {c.task for c in convs} == {"multiples"}
    # the scenes holding a shape or a colour twice, and no others
    assert {c.scene_seed for c in convs} == repeated
    answers = Counter()
    for conv in convs:
        scene = seeds[conv.scene_seed]
        counts = [qa for qa in conv.turns if qa.answer_type == "number"]
        assert any(int(qa.answer) >= 2 for qa in counts), conv  # each scene's repeat is asked ...
        assert any(qa.answer == str(len(scene.objects)) for qa in counts)  # ... and the objects in all
        answers.update(qa.answer for qa in counts)
        for qa in conv.turns:
            if qa.answer_type == "color":  # colour by size: a present object's colour
                assert qa.answer in {o.color for o in scene.objects}
    # ... beside the keys held once and the ones it lacks: no answer is given by the question's kind alone
    assert answers["1"] > answers["2"] > 0 and answers["0"] > 0


def test_multiples_position_asks_multiples_and_position_all_of_a_repeat_scene_in_one_conversation():
    pool = scenes("tiny", 300)
    convs = build_records("multiples_position", pool, 0)
    seeds = {s.seed: s for s in pool}
    assert convs and {c.task for c in convs} == {"multiples_position"}
    assert {c.scene_seed for c in convs} == _holding_a_key_twice(pool)
    kinds = Counter()
    for conv in convs:
        scene = seeds[conv.scene_seed]
        kinds.update(qa.answer_type for qa in conv.turns)
        counts = [qa.answer for qa in conv.turns if qa.answer_type == "number"]
        # multiples' turns: the repeat and the objects in all; position_all's: regions and relations
        assert any(int(a) >= 2 for a in counts) and str(len(scene.objects)) in counts, conv
        assert any(qa.answer_type in ("region", "relation", "yes_no") for qa in conv.turns), conv
        assert {qa.answer_type for qa in conv.turns} <= {"number", "color", "region", "relation", "yes_no"}
    assert min(kinds["number"], kinds["color"], kinds["region"], kinds["relation"], kinds["yes_no"]) > 0, (
        kinds
    )
    # shuffled together: some conversations open with a count, some with a position turn
    orders = [[qa.answer_type == "number" for qa in c.turns] for c in convs]
    assert any(not o[0] for o in orders) and any(o[0] for o in orders)


def test_dense_detail_counts_asks_every_repeated_key_and_all_objects_where_dense_detail_asks_three_counts():
    pool = scenes("tiny", 200)
    seeds = {s.seed: s for s in pool}
    convs = build_records("dense_detail_counts", pool, 0)
    assert {c.task for c in convs} == {"dense_detail_counts"}
    for conv in convs:
        scene = seeds[conv.scene_seed]
        counts = {qa.question: qa.answer for qa in conv.turns if qa.answer_type == "number"}
        repeated = [n for n in Counter(o.shape for o in scene.objects).values() if n >= 2]
        repeated += [n for n in Counter(o.color for o in scene.objects).values() if n >= 2]
        assert sorted(a for a in counts.values() if int(a) >= 2 and a != str(len(scene.objects))) == sorted(
            str(n) for n in repeated if n != len(scene.objects)
        ), conv
        assert len(scene.objects) < 2 or str(len(scene.objects)) in counts.values()
        assert sum(a in ("0", "1") for a in counts.values()) <= 3


def test_instruct_many_multiples_is_compare3_with_a_multiples_conversation_for_a_share_of_repeats():
    pool = scenes("tiny", 400)
    convs = build_records("instruct_many_multiples", pool, 0)
    repeated = _holding_a_key_twice(pool)
    by_task = Counter(c.task for c in convs)
    multiples = {c.scene_seed for c in convs if c.task == "multiples"}
    # only scenes holding a key twice get one, about one in four of them; every other scene is compare3's
    assert multiples <= repeated
    assert 0.15 < len(multiples) / len(repeated) < 0.35, (len(multiples), len(repeated))
    compare3 = {c.task for c in build_records("instruct_many_compare3", pool, 0)}
    assert set(by_task) - {"multiples"} <= compare3
