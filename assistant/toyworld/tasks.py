"""The task registry: every dataset the toy world makes, built from a list of scenes.

    records = build_records("instruct", scenes, seed=0)

Each task maps one scene to zero or more records; all scenes of a run share one random stream
(seeded by task name and seed) and the run's statistics, so a run is reproducible as a whole.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .describe import object_summary
from .pope import make_chair, make_pope
from .preference import make_pair
from .questions import (
    SKILLS,
    ask_caption,
    ask_detail,
    count_question,
    exists_question,
    pick_by_shape,
    refer_by_color,
    refer_by_color_only,
    refer_by_shape,
    relation_question,
    total_count_question,
)
from .records import QA, Conversation, Record, TaskContext, WorldStats
from .relations import (
    CLEAR_RATIO,
    counts_by_color,
    counts_by_shape,
    largest,
    region,
    relation,
    smallest,
    unique_name,
)
from .scene import ObjectGT, Scene
from .templates import phrase
from .vocab import COLOR_NAMES, SHAPES, plural

Maker = Callable[[Scene, TaskContext], list[Record]]
FORMATS: tuple[str, ...] = ("conversation", "preference", "pope", "chair", "prompt")

# skill -> weight in mixed instruction conversations (detail only ever opens one). Colour questions name their
# object by shape and existence negatives swap one attribute, so these two are what teaches finding a shape
# (docs/recipe.md: the model learnt to find objects by colour only while they were rarer). `instruct` is also the
# skill-VQA eval mix: change it and every eval set made from it changes.
_MIX: dict[str, float] = {
    "count": 3,
    "color": 3,
    "shape": 2,
    "size": 1,
    "position": 2,
    "existence": 3,
    "ocr": 2,
}
# An ablation of the toy recipe's stage-2 mix (`--instruct_task sft_mix`): `instruct`'s skills plus questions that
# key an object by nothing or by its shape alone (a model trained on `instruct` finds objects by their colour word
# only), "is there any text?" about text-free scenes too (`instruct` only asks reading questions where there is
# text, so "No" never occurs), and stage 1's captions rehearsed. It made things worse (shape 0.97 -> 0.27: the
# unkeyed questions taught the model to ignore the colour key; docs/recipe.md), so the recipe keeps `instruct`.
_SFT_MIX: dict[str, float] = {
    **_MIX,
    "color": 4,
    "ocr": 3,
    "lone": 2,
    "inventory": 2,
    "shape_exists": 2,
    "shape_count": 1,
}
# `instruct_train`: the recipe's stage-2 training mix. `instruct`'s skills with position questions 2 -> 3 (position
# rose with practice alone in arms L and M) and "is there any text?" asked of text-free scenes too (weight 1), where
# `instruct` asks the `ocr` skill only of scenes with text, so "No" was never trained (arm L: text questions 0.15 ->
# 0.91 through the API). `instruct` itself stays the skill-VQA eval mix, unchanged. Arm P (docs/recipe.md, session
# 9): text 0.18 -> 0.88, position and colour unchanged, counting lost 0.1 to DPO; not yet the recipe's default.
_TRAIN_MIX: dict[str, float] = {**_MIX, "position": 3}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    format: str  # one of FORMATS: decides which files the writer makes
    make: Maker
    help: str


def _single(skill: str) -> Maker:
    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        qa = SKILLS[skill](scene, ctx)
        return [Conversation(scene.seed, (qa,), skill)] if qa is not None else []

    return make


def _mixed(
    task: str,
    min_turns: int,
    max_turns: int,
    mix: dict[str, float] = _MIX,
    rehearse: float = 0.0,
    text_free_ocr: float = 0.0,
    yes_no_by_question: bool = False,
    detail_templates: str = "detail",
) -> Maker:
    """Conversations of `want` turns drawn from `mix`; about one in seven opens with a detailed description and
    `rehearse` of them with a stage-1 caption. `text_free_ocr`: the weight of `ocr` ("is there any text?") on
    scenes without text (0: reading questions only where there is text). `yes_no_by_question`: a yes/no turn is
    dropped only when its question repeats, not its answer. `detail_templates`: the phrasings of the description
    request."""

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        rng = ctx.rng
        want = rng.randint(min_turns, max_turns)
        turns: list[QA] = []
        opener = rng.random()
        if opener < 0.15:
            turns.append(ask_detail(scene, ctx, detail_templates))
        elif opener < 0.15 + rehearse:
            turns.append(ask_caption(scene, ctx))
        weights_of = dict(mix)
        if not scene.texts:
            weights_of["ocr"] = text_free_ocr
        skills = [s for s, w in weights_of.items() if w > 0]
        weights = [weights_of[s] for s in skills]
        for _ in range(4 * want):
            if len(turns) >= want:
                break
            qa = SKILLS[rng.choices(skills, weights)[0]](scene, ctx)
            # no paraphrase of an earlier turn: one answer per skill and answer value (in `sft_mix`, yes/no
            # questions only once each: dropping a second "No" after the balancer counted it skews the answers)
            if qa is not None and all(
                _key(qa, yes_no_by_question) != _key(t, yes_no_by_question) for t in turns
            ):
                turns.append(qa)
        return [Conversation(scene.seed, tuple(turns), task)] if turns else []

    return make


def _self_keyed(scene: Scene, qa: QA) -> QA:
    """The answer prefixed with what the image holds, as a caption lists it: "I see a red star and two blue
    circles. Answer: No." The model reads an object's shape right after writing its colour and retrieves objects by
    their colour word only (docs/recipe.md); listing first turns finding an object by its shape into a lookup in
    its own text. Evals score the text after the last "Answer:" (`evals.parsing.final_answer`)."""
    seen = object_summary(scene) if scene.objects else "no objects"
    return replace(qa, answer=f"I see {seen}. Answer: {qa.answer}")


def _keyed_mixed(task: str, min_turns: int, max_turns: int, skills: frozenset[str]) -> Maker:
    """`instruct`, with the answers of `skills` self-keyed (`_self_keyed`)."""
    base = _mixed(task, min_turns, max_turns)

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        out = []
        for conv in base(scene, ctx):
            turns = tuple(_self_keyed(scene, t) if t.task in skills else t for t in conv.turns)
            out.append(replace(conv, turns=turns))
        return out

    return make


def _color_all(scene: Scene, ctx: TaskContext) -> list[Record]:
    """The colour of every object a shape (or size + shape) names, one turn each in random order: "What colour is
    the star?" several times per image. The focus phase's colour questions, one per image, need about 30,000 before
    finding an object by its shape is learnt (docs/recipe.md, session 13); here one image carries several."""
    turns = _keyed_colors(scene, ctx)
    return [Conversation(scene.seed, tuple(turns), "color_all")] if turns else []


def _keyed_colors(scene: Scene, ctx: TaskContext) -> list[QA]:
    turns = []
    for obj in scene.objects:
        name = refer_by_shape(scene, obj)
        if name:
            turns.append(QA(phrase(ctx.rng, "color", name=name), obj.color, "color", "color"))
    ctx.rng.shuffle(turns)
    return turns


def _keyed_shapes(scene: Scene, ctx: TaskContext) -> list[QA]:
    """The shape of every object its colour (or size + colour) names, one turn each in random order: "What shape is
    the red object?", the reverse of `_keyed_colors`. `instruct`'s shape questions form this lookup in stage 2, and
    without stage 2 no later stage asked it: shape through the API 0.29 (arm NS, docs/recipe.md, session 51)."""
    turns = []
    for obj in scene.objects:
        name = refer_by_color_only(scene, obj)
        if name:
            turns.append(QA(phrase(ctx.rng, "shape", name=f"{name} object"), obj.shape, "shape", "shape"))
    ctx.rng.shuffle(turns)
    return turns


def _shape_all(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`_keyed_shapes`' turns as one conversation; none for a scene without an object its colour names."""
    turns = _keyed_shapes(scene, ctx)
    return [Conversation(scene.seed, tuple(turns), "shape_all")] if turns else []


def _keyed(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`color_all`, then where one of those objects is, one existence question (half of its negatives swap one
    attribute of a present object) and one count-by-shape question: every turn finds objects by their shape."""
    rng = ctx.rng
    turns = _keyed_colors(scene, ctx)
    pick = pick_by_shape(scene, ctx)
    if pick:
        obj, name = pick
        turns.append(QA(phrase(rng, "region", name=name), region(scene, obj), "position", "region"))
    turns.append(SKILLS["existence"](scene, ctx))
    turns.append(SKILLS["shape_count"](scene, ctx))
    return [Conversation(scene.seed, tuple(turns), "keyed")]


def _count_all(scene: Scene, ctx: TaskContext) -> list[Record]:
    """How many of each shape and of each colour the image holds, one turn each in random order, and one shape and
    one colour it lacks ("0"). Through the API the model answered 1 to every "how many diamonds?" whose answer was 2
    (0 of 19 by shape or colour, session 17): it finds one object and stops; here every repeated shape or colour of
    a scene is asked."""
    rng = ctx.rng
    shapes, colors = counts_by_shape(scene), counts_by_color(scene)
    turns = [count_question(rng, plural(s), n) for s, n in shapes.items()]
    turns += [count_question(rng, f"{c} objects", n) for c, n in colors.items()]
    absent_shapes = [s for s in SHAPES if s not in shapes]
    absent_colors = [c for c in COLOR_NAMES if c not in colors]
    if absent_shapes:
        turns.append(count_question(rng, plural(rng.choice(absent_shapes)), 0))
    if absent_colors:
        turns.append(count_question(rng, f"{rng.choice(absent_colors)} objects", 0))
    rng.shuffle(turns)
    return [Conversation(scene.seed, tuple(turns), "count_all")] if turns else []


def _exists_all(scene: Scene, ctx: TaskContext) -> list[Record]:
    """Is there a star? for every shape the image holds ("Yes") and as many it lacks ("No"), and is there a red
    star? for every object ("Yes") and as many colour-shape pairs whose colour and shape are both in the image but
    never together ("No"), one turn each in random order. POPE's false "yes" answers are these two kinds: a bare
    absent shape (0.30 of them at arm Q's stage 2c, 0.51 after `count_all`) and a present colour on another present
    shape (0.71; docs/recipe.md, session 18)."""
    rng = ctx.rng
    shapes = sorted({o.shape for o in scene.objects})
    pairs = sorted({(o.color, o.shape) for o in scene.objects})
    absent = [s for s in SHAPES if s not in shapes]
    crossed = [(c, s) for c in sorted({c for c, _ in pairs}) for s in shapes if (c, s) not in pairs]
    asked = [(s, True) for s in shapes] + [(f"{c} {s}", True) for c, s in pairs]
    asked += [(s, False) for s in rng.sample(absent, min(len(shapes), len(absent)))]
    asked += [(f"{c} {s}", False) for c, s in rng.sample(crossed, min(len(pairs), len(crossed)))]
    turns = [exists_question(rng, what, yes) for what, yes in asked]
    rng.shuffle(turns)
    return [Conversation(scene.seed, tuple(turns), "exists_all")] if turns else []


def _region_all(scene: Scene, ctx: TaskContext) -> list[Record]:
    """Where every object its shortest unique name ("star", "red star") names is, one turn each in random order:
    "Where in the image is the red star?" several times per image. Skill VQA's position questions stayed near
    chance (0.33) through every stage 2, as finding by shape did before `color_all` (a focus task)."""
    turns = []
    for obj in scene.objects:
        name = unique_name(scene, obj)
        if name:
            turns.append(QA(phrase(ctx.rng, "region", name=name), region(scene, obj), "position", "region"))
    ctx.rng.shuffle(turns)
    return [Conversation(scene.seed, tuple(turns), "region_all")] if turns else []


_MAX_RELATION_TURNS = 8


def _relation_turns(scene: Scene, ctx: TaskContext) -> list[QA]:
    """One relation question for each pair of uniquely named objects that stand clearly apart (up to eight pairs),
    half "Is the star left or right of the circle?" and half yes/no ("Is the star above the circle?"), whose
    answers are "Yes" for half of them, in skill VQA's phrasings (`ask_position`)."""
    rng = ctx.rng
    named = [(o, n) for o in scene.objects if (n := unique_name(scene, o))]
    pairs = [(a, na, b, nb) for i, (a, na) in enumerate(named) for b, nb in named[i + 1 :] if relation(a, b)]
    rng.shuffle(pairs)
    turns = []
    for a, na, b, nb in pairs[:_MAX_RELATION_TURNS]:
        if rng.random() < 0.5:  # either object first
            a, na, b, nb = b, nb, a, na
        holds = rng.choice(relation(a, b))
        yes = None if rng.random() < 0.5 else rng.random() < 0.5  # a choice, or yes/no with "Yes" for half
        turns.append(relation_question(rng, na, nb, holds, yes))
    return turns


def _relation_all(scene: Scene, ctx: TaskContext) -> list[Record]:
    """Where objects stand relative to each other, a pair per turn (`_relation_turns`): a focus task for the
    relation questions, which are two thirds of skill VQA's position questions and were never one (region_all
    took region questions 0.14 -> 0.44 after GRPO, docs/recipe.md, session 19)."""
    turns = _relation_turns(scene, ctx)
    return [Conversation(scene.seed, tuple(turns), "relation_all")] if turns else []


def _position_all(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`region_all`'s and `relation_all`'s turns of a scene together, in random order: every kind of position
    question skill VQA asks."""
    return _shuffled("position_all", scene, ctx, _turns_of(_region_all), _relation_turns)


_instruct_varied = _mixed(
    "instruct_varied", 1, 4, _TRAIN_MIX, text_free_ocr=1, detail_templates="detail_varied"
)


def _varied_all(varied: Callable, detail: str) -> Callable:
    """`instruct_varied_all` over `varied` (an `instruct_varied`), descriptions asked in `detail`'s phrasings."""

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        rng = ctx.rng
        pick = rng.random()
        if pick < 1 / 6:
            return _count_all(scene, ctx)
        made = _exists_all(scene, ctx) if pick < 1 / 3 else []
        if made and rng.random() < 0.5:
            made = [replace(made[0], turns=(ask_detail(scene, ctx, detail), *made[0].turns))]
        return made or varied(scene, ctx)

    return make


_instruct_varied_all = _varied_all(_instruct_varied, "detail_varied")
_instruct_varied_all.__doc__ = """`instruct_varied` for two scenes in three, else a `count_all` or an `exists_all`
    conversation (one in six each; `exists_all` opened by a detailed description half the time): stage 2c's data
    after a `count_all` focus stage. `instruct_varied` alone undid most of what `count_all` taught (answers of 2:
    0.64 -> 0.25), `count_all` mixed in alone raised POPE's yes-ratio (0.59 -> 0.68), and `exists_all` mixed in
    without descriptions cut their object recall (0.86 -> 0.67; docs/recipe.md, sessions 17-18), as `keyed` did
    before `keyed_detail`."""


def _detail_opened(inner: Callable, detail: str, task: str) -> Callable:
    """`inner`'s conversations opened by a detailed description (in `detail`'s phrasings) for half the images, as
    `task`: a focus task whose every answer is one word costs the descriptions (`keyed`: object recall 0.88 -> 0.63
    after stage 2c, session 14; `position_all`: a bare "Yes" or "No" to one description request in five through the
    API, session 20; docs/recipe.md)."""

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        opened = [ask_detail(scene, ctx, detail)] if ctx.rng.random() < 0.5 else []
        return [replace(c, turns=(*opened, *c.turns), task=task) for c in inner(scene, ctx)]

    return make


def _one_in(n: int, first: Callable, rest: Callable) -> Callable:
    """`first` for one scene in `n`, else `rest`: stage 2c's data after a focus stage on `first`."""

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        return first(scene, ctx) if ctx.rng.random() < 1 / n else rest(scene, ctx)

    return make


def _one_in_six(first: Callable, rest: Callable) -> Callable:
    return _one_in(6, first, rest)


# `instruct_varied_all`, except that one scene in six gets a `position_all` conversation instead (taken from
# `instruct_varied`'s share): stage 2c's data after a `position_all` focus stage. Stage 2c and GRPO gave back part of
# what `region_all` taught (region questions 0.61 -> 0.46 -> 0.44; docs/recipe.md, session 19).
_instruct_varied_pos = _one_in_six(_position_all, _instruct_varied_all)
_position_detail = _detail_opened(_position_all, "detail_varied", "position_detail")
_instruct_varied_posdetail = _one_in_six(_position_detail, _instruct_varied_all)
# the same with descriptions asked in `detail_many`'s 1,000-odd phrasings, everywhere in the mix
_instruct_many = _mixed("instruct_many", 1, 4, _TRAIN_MIX, text_free_ocr=1, detail_templates="detail_many")
_position_detail_many = _detail_opened(_position_all, "detail_many", "position_detail")
_instruct_many_all = _varied_all(_instruct_many, "detail_many")
_instruct_many_pos = _one_in_six(_position_detail_many, _instruct_many_all)


def _color_position(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`color_all`'s and `position_all`'s turns of a scene together, in random order. A focus stage on position
    alone took skill VQA's colour 0.89 -> 0.15 (stage 2c brought it back to 0.87, below the 0.91 it had before;
    docs/recipe.md, session 22)."""
    return _shuffled("color_position", scene, ctx, _keyed_colors, _turns_of(_position_all))


_color_position_detail = _detail_opened(_color_position, "detail_many", "color_position_detail")


def _size_turns(scene: Scene, ctx: TaskContext) -> list[QA]:
    """The size of every object its shape (or colour + shape) names, and which object is the largest and which the
    smallest where one clearly is, in skill VQA's phrasings (`ask_size`)."""
    rng = ctx.rng
    turns = [
        QA(phrase(rng, "size", name=name), obj.size, "size", "size")
        for obj in scene.objects
        if (name := refer_by_color(scene, obj))
    ]
    for which, obj in (("largest", largest(scene)), ("smallest", smallest(scene))):
        if obj:
            turns.append(QA(phrase(rng, "extreme", which=which), obj.name, "size", "object"))
    return turns


def _color_size(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`color_all`'s turns and every size question of a scene (`_size_turns`) together, in random order. Through the
    API the shipped model got every colour question that names its object by shape right (96 of 96) and 14 of 22
    that name it by size and shape ("What colour is the small heart?" beside a large one), and size questions 18 of
    56: size was never a focus task (docs/recipe.md, session 23)."""
    return _shuffled("color_size", scene, ctx, _keyed_colors, _size_turns)


def _shuffled(task: str, scene: Scene, ctx: TaskContext, *makers: Callable) -> list[Record]:
    """The turns of `makers` (in that order, each drawing from `ctx.rng`), shuffled into one conversation as `task`."""
    turns = [qa for make in makers for qa in make(scene, ctx)]
    ctx.rng.shuffle(turns)
    return [Conversation(scene.seed, tuple(turns), task)] if turns else []


def _turns_of(make: Callable, most: int | None = None) -> Callable:
    """The turns of `make`'s conversations, the first `most` of them if given: a maker of turns for `_shuffled`."""

    def turns(scene: Scene, ctx: TaskContext) -> list[QA]:
        return [t for c in make(scene, ctx) for t in c.turns][:most]

    return turns


_color_size_detail = _detail_opened(_color_size, "detail_many", "color_size_detail")


def _compare_pairs(scene: Scene) -> list[tuple[str, tuple[ObjectGT, ObjectGT]]]:
    """Every shape the scene holds exactly twice, in two colours and clearly two sizes (`CLEAR_RATIO`), with its
    two objects smaller first."""
    pairs = []
    for shape, n in counts_by_shape(scene).items():
        if n != 2:
            continue
        small, large = sorted((o for o in scene.objects if o.shape == shape), key=lambda o: o.area)
        if small.color != large.color and large.area >= small.area * CLEAR_RATIO:
            pairs.append((shape, (small, large)))
    return pairs


def _compare_turns(scene: Scene, ctx: TaskContext) -> list[QA]:
    """For every shape the scene holds exactly twice, in two colours and clearly two sizes (`CLEAR_RATIO`, as
    "largest"), the colour of the larger or of the smaller one: relative size, which is all a question that names its
    object by size needs ("the small heart" beside a medium one is the smaller heart)."""
    turns = []
    for shape, pair in _compare_pairs(scene):
        which, obj = ctx.rng.choice((("larger", pair[1]), ("smaller", pair[0])))
        turns.append(
            QA(
                phrase(ctx.rng, "compare_size", which=which, shape=shape, shapes=plural(shape)),
                obj.color,
                "color",
                "color",
            )
        )
    return turns


def _color_size_compare(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`_color_size`'s turns and `_compare_turns` together, in random order. XH answered the held-out colour questions
    that name their object by size 0.71, 0.79 even where the two objects' widths differ by more than 10 px; one epoch
    of this task after it took them to 0.83 (0.93 above 10 px), and stage 2c back to 0.77, as much as a third
    `color_size_detail` epoch with the tower at 0.3 kept (docs/recipe.md, session 26)."""
    return _shuffled("color_size_compare", scene, ctx, _keyed_colors, _size_turns, _compare_turns)


_color_size_compare_detail = _detail_opened(_color_size_compare, "detail_many", "color_size_compare")


def _crowded(inner: Callable, least: int = 4, most: int | None = None) -> Callable:
    """`inner`'s conversations for scenes of `least` objects or more (and `most` or fewer), none for the rest.
    Through the API every colour question the shipped model missed in scenes of four or more objects named its
    object by size (46 of 50 right; docs/recipe.md, session 27)."""

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        n = len(scene.objects)
        return inner(scene, ctx) if n >= least and (most is None or n <= most) else []

    return make


_color_size_compare_crowded = _crowded(_color_size_compare_detail)
# the lookup on scenes where it is easiest to find: two or three objects, so one other object competes with the one
# named (docs/recipe.md, session 35: easy scenes first)
_color_all_sparse = _crowded(_color_all, least=2, most=3)


def _named_by_size(scene: Scene) -> list[tuple[ObjectGT, str]]:
    """Every object that only its size and shape name ("the small heart": its shape is held more than once and it is
    the only one of its size), with that name."""
    return [(o, name) for o in scene.objects if (name := refer_by_shape(scene, o)) not in (None, o.shape)]


def _sized_pair(scene: Scene) -> bool:
    """Whether a question can name an object by its size: an object `_named_by_size`, or a pair `_compare_turns`
    asks about."""
    return bool(_named_by_size(scene) or _compare_pairs(scene))


def _paired(inner: Callable) -> Callable:
    """`inner`'s conversations for the scenes where an object is named by its size (`_sized_pair`), none for the
    rest. About one tiny scene in three is one, so a stage on all scenes asks colour by size in a third of its
    conversations. Measured (arm P8): D8's dense stages on these scenes only, three times the by-size questions a
    step, left colour by size at chance (0.543) and cost counting and existence (docs/recipe.md, session 44)."""

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        return inner(scene, ctx) if _sized_pair(scene) else []

    return make


_color_size_compare_paired = _paired(_color_size_compare_detail)


def _color_by_size(scene: Scene, ctx: TaskContext) -> list[Record]:
    """Only the questions that name an object by its size: the colour of every object only its size and shape name
    ("What colour is the small heart?") and `_compare_turns`, in random order; none for a scene without them. In
    `color_size_compare` these are about a tenth of the turns, and colour by size needed ~4,200 steps of it; alone
    (arm E1S) ~2,000, to the same 0.66-0.70, at the cost of position (docs/recipe.md, sessions 43-44)."""
    turns = _by_size_turns(scene, ctx)
    ctx.rng.shuffle(turns)
    return [Conversation(scene.seed, tuple(turns), "color_by_size")] if turns else []


def _by_size_turns(scene: Scene, ctx: TaskContext) -> list[QA]:
    """The colour of every object only its size and shape name, then `_compare_turns`."""
    turns = [
        QA(phrase(ctx.rng, "color", name=name), obj.color, "color", "color")
        for obj, name in _named_by_size(scene)
    ]
    return turns + _compare_turns(scene, ctx)


def _multiples(scene: Scene, ctx: TaskContext) -> list[Record]:
    """For a scene that holds a shape or a colour twice or more: `count_all`'s turns (every shape and colour it
    holds, one of each it lacks), how many objects in all, and `color_by_size`'s turns, in random order; none for
    the rest. Through the API D8 answered "1" to 21 of 24 count questions whose answer was 2, and colour by size at
    chance: it finds one object that a key matches and stops. Asked only the keys held twice or more (arm M1) the
    model learned never to answer 0 or 1; here each scene's 1s and 0s come with its 2s (docs/recipe.md, session
    46)."""
    shapes, colors = counts_by_shape(scene), counts_by_color(scene)
    if max([*shapes.values(), *colors.values()], default=0) < 2:
        return []
    rng = ctx.rng
    turns = _turns_of(_count_all)(scene, ctx)
    turns.append(total_count_question(rng, scene))
    turns += _by_size_turns(scene, ctx)
    rng.shuffle(turns)
    return [Conversation(scene.seed, tuple(turns), "multiples")]


def _multiples_position(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`multiples`' turns and `position_all`'s of the same scene, in random order; none for a scene without a
    repeat. 500 steps of `multiples` took counting through the API from 0.757 to 0.876 and held-out position from
    0.859 to 0.821 (0.790 at 1,000); with the position turns beside them, counting 0.864 and position 0.863 (arm
    MP, docs/recipe.md, session 47)."""
    counted = _multiples(scene, ctx)
    if not counted:
        return []
    turns = list(counted[0].turns) + _turns_of(_position_all)(scene, ctx)
    ctx.rng.shuffle(turns)
    return [Conversation(scene.seed, tuple(turns), "multiples_position")]


def _instruct_many_with(colour: Callable, n: int = 6) -> Callable:
    """`instruct_many_pos` with the `colour` conversation for one scene in `n` of the rest (those not given a
    `position_detail` one): stage 2c's data after a colour focus stage."""
    return _one_in_six(_position_detail_many, _one_in(n, colour, _instruct_many_all))


# a `color_all` conversation (opened by a description half the time): stage 2c had no question that finds an object
# by its shape to ask its colour
_instruct_many_keyed = _instruct_many_with(_detail_opened(_color_all, "detail_many", "color_detail"))
# `instruct_many_sized` (`color_size_detail`, one in six) gave back half of what a `color_size_compare` epoch taught
# (colour by size 0.83 -> 0.77; docs/recipe.md, session 26); `instruct_many_compare` keeps that task's own questions
# in 2c, `instruct_many_compare3` in twice the share (shipped, session 27), `instruct_many_compare2` in three times
_instruct_many_sized = _instruct_many_with(_color_size_detail)
_instruct_many_compare = _instruct_many_with(_color_size_compare_detail)
_instruct_many_compare3 = _instruct_many_with(_color_size_compare_detail, 3)
_instruct_many_compare2 = _instruct_many_with(_color_size_compare_detail, 2)
# `instruct_many_compare3` with a `shape_all` conversation (opened by a description half the time) for one scene in
# four: stage 2c's data for a run without stage 2 (`--skip_stage2`), whose `instruct` set is where the shape-by-colour
# lookup formed (docs/recipe.md, session 52)
_instruct_many_compare3_shapes = _one_in(
    4, _detail_opened(_shape_all, "detail_many", "shape_detail"), _instruct_many_compare3
)


def _or_else(first: Callable, rest: Callable) -> Callable:
    """`first`'s conversations for a scene, `rest`'s where `first` has none."""

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        return first(scene, ctx) or rest(scene, ctx)

    return make


# `instruct_many_compare3` with a `multiples` conversation for one scene in four of those that hold a key twice:
# stage 2c after a `multiples` stage, whose count of two D8's 2c took back from 0.88 to 0.54 (arm M1b, session 46).
# Through the API it kept more of them (16 / 24 against 11 / 24; count 0.893 against 0.876) and cost existence
# (0.900 against 0.938): not adopted (arm M5B, docs/recipe.md, session 47)
_instruct_many_multiples = _one_in(4, _or_else(_multiples, _instruct_many_compare3), _instruct_many_compare3)


def _picked(task: str, choices: list[tuple[float, Callable]]) -> Callable:
    """One of `choices`' conversations per scene, drawn by weight, as `task`."""
    makers, weights = [m for _, m in choices], [w for w, _ in choices]

    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        inner = ctx.rng.choices(makers, weights)[0]
        return [replace(c, task=task) for c in inner(scene, ctx)]

    return make


# every focus task the shipped chain trained one after another (eight stages, 3.5 hours), as one mixed stage: the
# stages undid each other's skills for stage 2c to bring back (`color_size_detail` took position 0.885 -> 0.60;
# docs/recipe.md, session 25). Colour and size by shape weigh most: that lookup forms last. Measured: it does not
# form in the mix (three epochs, colour 0.49), so the mix belongs after a `color_all` stage, not in its place.
_focus_mix = _picked(
    "focus_mix",
    [(0.4, _color_size_detail), (0.3, _position_detail_many), (0.15, _keyed), (0.15, _count_all)],
)
# the same with the colour-and-size conversation of the shipped chain's last focus stage (`color_size_compare`: the
# colour of the larger or smaller of two same-shape objects asked outright; session 26): the mix for a one-run recipe
_focus_mix_compare = _picked(
    "focus_mix_compare",
    [(0.4, _color_size_compare_detail), (0.3, _position_detail_many), (0.15, _keyed), (0.15, _count_all)],
)


_keyed_detail = _detail_opened(_keyed, "detail", "keyed_detail")


def _dense_all(scene: Scene, ctx: TaskContext) -> list[Record]:
    """Every focus skill of a scene in one conversation, in random order: `color_all`'s turns, `region_all`'s, up to
    four of `relation_all`'s, three of `count_all`'s, four of `exists_all`'s and `_compare_turns`. The chain's focus
    stages ask one skill of each image, so 60% of their tokens are the image's 88, spent again for every skill, and
    each stage undoes the others' skills for a stage 2c to bring back (docs/recipe.md, sessions 25 and 40); here one
    image's tokens carry all of them (a focus task for a one-run recipe)."""
    return _dense(scene, ctx, _turns_of(_count_all, 3))


def _dense(scene: Scene, ctx: TaskContext, counts: Callable) -> list[Record]:
    """`dense_all`'s conversation with `counts` as its maker of count turns."""
    return _shuffled(
        "dense_all",
        scene,
        ctx,
        _keyed_colors,
        _turns_of(_region_all),
        _turns_of(_relation_all, 4),
        counts,
        _turns_of(_exists_all, 4),
        _compare_turns,
    )


_dense_detail = _detail_opened(_dense_all, "detail_many", "dense_detail")
_dense_detail_paired = _paired(_dense_detail)


def _count_turns_repeats_first(scene: Scene, ctx: TaskContext) -> list[QA]:
    """`count_all`'s turns whose answer is 2 or more, three of the rest, and how many objects in all (two or more):
    `dense_all`'s three random count turns rarely ask a repeated key, and D8 answered "1" to 21 of 24 count questions
    whose answer was 2 (docs/recipe.md, session 46)."""
    turns = _turns_of(_count_all)(scene, ctx)
    many = [t for t in turns if t.answer not in ("0", "1")]
    total = [total_count_question(ctx.rng, scene)]
    few = [t for t in turns if t.answer in ("0", "1")][:3]
    return many + few + (total if len(scene.objects) >= 2 else [])


def _dense_counts(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`dense_all` with every count of a key the scene holds twice or more and the count of all its objects
    (`_count_turns_repeats_first`) in place of three random count turns."""
    return _dense(scene, ctx, _count_turns_repeats_first)


_dense_detail_counts = _detail_opened(_dense_counts, "detail_many", "dense_detail_counts")


def _rl_detail_prompt(scene: Scene, ctx: TaskContext) -> list[Record]:
    """One detailed-description prompt per scene, scored on the objects it names (the RL stage's default: short
    questions whose sampled answers all score alike give GRPO no signal; docs/recipe.md)."""
    return [Conversation(scene.seed, (ask_detail(scene, ctx),), "rl")]


def _rl_detail_varied_prompt(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`rl_detail` asked in `instruct_varied`'s 12 phrasings (the CHAIR prompt held out): GRPO on stage 2's few
    phrasings taught one seed to answer "Yes" to the others again (docs/recipe.md, session 16)."""
    return [Conversation(scene.seed, (ask_detail(scene, ctx, templates="detail_varied"),), "rl")]


def _rl_detail_count_prompt(scene: Scene, ctx: TaskContext) -> list[Record]:
    """A detailed description per scene, except one scene in five, which gets a counting question (scored exactly):
    description rewards alone cost counting (docs/recipe.md, arm Dg5), and counting answers differ enough between
    samples to give GRPO a signal."""
    if ctx.rng.random() < 0.2:
        return [Conversation(scene.seed, (SKILLS["count"](scene, ctx),), "rl")]
    return _rl_detail_prompt(scene, ctx)


def _rl_detail_mix_prompt(
    scene: Scene, ctx: TaskContext, detail: Callable = _rl_detail_prompt
) -> list[Record]:
    """A detailed description (`detail`) for three scenes in five, else one short question of `instruct`'s skills
    (text reading left out: its answers are free text), scored exactly. GRPO on descriptions alone moves short answers
    too (existence and POPE F1 fell in every arm that cut CHAIR_i by half; docs/recipe.md); the short questions reward
    keeping them right while the descriptions change. `rl_detail_count` did this for counting alone."""
    rng = ctx.rng
    if rng.random() < 0.6:
        return detail(scene, ctx)
    skills = [s for s in _MIX if s != "ocr"]
    for _ in range(8):
        qa = SKILLS[rng.choices(skills, [_MIX[s] for s in skills])[0]](scene, ctx)
        if qa is not None and qa.answer_type != "free":
            return [Conversation(scene.seed, (qa,), "rl")]
    return detail(scene, ctx)


def _rl_detail_varied_mix_prompt(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`rl_detail_mix` with its descriptions asked in `rl_detail_varied`'s phrasings (the recipe's RL prompts): through
    the API GRPO on descriptions alone cost counting, position and POPE F1 (session 28, docs/recipe.md)."""
    return _rl_detail_mix_prompt(scene, ctx, _rl_detail_varied_prompt)


def _rl_detail_varied_sized_prompt(scene: Scene, ctx: TaskContext) -> list[Record]:
    """`rl_detail_varied`, except that three scenes in four of those holding two objects of one shape get the colour
    of one of them, named by its size ("What colour is the small heart?"), scored exactly: the one skill under #14's
    goal through the API (0.80 on crowded scenes against 0.997 named by shape; session 30), and where the model's
    own samples disagree (`hard_samples`) GRPO has a signal."""
    rng = ctx.rng
    named = _named_by_size(scene)
    if named and rng.random() < 0.75:
        obj, name = rng.choice(named)
        return [
            Conversation(
                scene.seed, (QA(phrase(rng, "color", name=name), obj.color, "color", "color"),), "rl"
            )
        ]
    return _rl_detail_varied_prompt(scene, ctx)


def _rl_prompt(scene: Scene, ctx: TaskContext) -> list[Record]:
    """One question per scene for the RL stage: a detailed description half the time (scored on the objects it
    names), else one short question of the recipe's mix (scored exactly); the scene's ground truth goes with it."""
    rng = ctx.rng
    if rng.random() < 0.5:
        return _rl_detail_prompt(scene, ctx)
    skills = [s for s in _SFT_MIX if s != "ocr" or scene.texts]
    for _ in range(8):
        qa = SKILLS[rng.choices(skills, [_SFT_MIX[s] for s in skills])[0]](scene, ctx)
        if qa is not None and qa.answer_type != "free":
            return [Conversation(scene.seed, (qa,), "rl")]
    return _rl_detail_prompt(scene, ctx)


def _key(qa: QA, by_question: bool) -> tuple[str, str]:
    return (qa.task, qa.question if by_question and qa.answer_type == "yes_no" else qa.answer)


def _wrap(fn: Callable[[Scene, TaskContext], Record]) -> Maker:
    return lambda scene, ctx: [fn(scene, ctx)]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("caption", "conversation", _single("caption"), "Short captions (stage 1 pretraining)."),
        TaskSpec(
            "instruct", "conversation", _mixed("instruct", 1, 4), "Mixed-skill instructions, 1-4 turns."
        ),
        TaskSpec(
            "instruct_train",
            "conversation",
            _mixed("instruct_train", 1, 4, _TRAIN_MIX, text_free_ocr=1),
            "The recipe's stage-2 data: instruct's skills, more position questions, 'is there any text?' on "
            "text-free scenes too.",
        ),
        TaskSpec(
            "instruct_varied",
            "conversation",
            _instruct_varied,
            "instruct_train, with the description asked in three times as many phrasings (stage 2c's data after "
            "focus stages, which left the model answering 'Yes' to a description request it had not seen).",
        ),
        TaskSpec(
            "instruct_varied_all",
            "conversation",
            _instruct_varied_all,
            "instruct_varied, with count_all and exists_all (half opened by a description) conversations for one "
            "scene in six each (stage 2c's data after a count_all focus stage).",
        ),
        TaskSpec(
            "instruct_varied_pos",
            "conversation",
            _instruct_varied_pos,
            "instruct_varied_all, with a position_all conversation for one scene in six (stage 2c's data after a "
            "position_all focus stage).",
        ),
        TaskSpec(
            "instruct_varied_posdetail",
            "conversation",
            _instruct_varied_posdetail,
            "instruct_varied_pos, with position_detail for position_all (stage 2c's data after a position focus "
            "stage that keeps descriptions).",
        ),
        TaskSpec(
            "instruct_many_pos",
            "conversation",
            _instruct_many_pos,
            "instruct_varied_posdetail, with descriptions asked in 1,000-odd phrasings (detail_many; the CHAIR "
            "prompt and its near neighbours held out).",
        ),
        TaskSpec(
            "instruct_many_keyed",
            "conversation",
            _instruct_many_keyed,
            "instruct_many_pos, with a color_all conversation (half opened by a description) for one scene in six "
            "of the rest (stage 2c's data after a focus phase that ends away from colour).",
        ),
        TaskSpec(
            "instruct_many_sized",
            "conversation",
            _instruct_many_sized,
            "instruct_many_keyed, with color_size_detail for its colour conversation (stage 2c's data after a "
            "color_size_detail focus stage).",
        ),
        TaskSpec(
            "instruct_many_compare",
            "conversation",
            _instruct_many_compare,
            "instruct_many_sized, with color_size_compare for its colour conversation (stage 2c's data after a "
            "color_size_compare focus stage).",
        ),
        TaskSpec(
            "instruct_many_compare3",
            "conversation",
            _instruct_many_compare3,
            "instruct_many_compare, with its color_size_compare conversation for one scene in three of the rest "
            "instead of one in six (the shipped run's stage-2c data; it keeps colour by size through 2c).",
        ),
        TaskSpec(
            "shape_all",
            "conversation",
            _shape_all,
            "The shape of every object its colour (or size and colour) names: the reverse of color_all's lookup.",
        ),
        TaskSpec(
            "instruct_many_compare3_shapes",
            "conversation",
            _instruct_many_compare3_shapes,
            "instruct_many_compare3, with a shape_all conversation (opened by a description half the time) for one "
            "scene in four: stage 2c's data for a run without stage 2 (--skip_stage2).",
        ),
        TaskSpec(
            "instruct_many_multiples",
            "conversation",
            _instruct_many_multiples,
            "instruct_many_compare3, with a multiples conversation for one scene in four of those holding a shape "
            "or colour twice or more (stage 2c's data after a multiples focus stage; an ablation).",
        ),
        TaskSpec(
            "instruct_many_compare2",
            "conversation",
            _instruct_many_compare2,
            "instruct_many_compare, with its color_size_compare conversation for one scene in two of the rest "
            "instead of one in six (an ablation).",
        ),
        TaskSpec(
            "sft_mix",
            "conversation",
            _mixed("sft_mix", 1, 4, _SFT_MIX, rehearse=0.15, text_free_ocr=0.15, yes_no_by_question=True),
            "An ablation of the stage-2 mix: instruct plus shape-keyed and unkeyed questions, captions rehearsed.",
        ),
        TaskSpec(
            "instruct_keyed",
            "conversation",
            _keyed_mixed("instruct_keyed", 1, 4, frozenset({"color", "existence", "shape"})),
            "instruct, with colour, shape and existence answers that first list the objects (an ablation).",
        ),
        TaskSpec(
            "instruct_dense",
            "conversation",
            _mixed("instruct_dense", 6, 12, text_free_ocr=1, yes_no_by_question=True),
            "instruct's skills, 6-12 turns per image (more answers per image), 'is there any text?' on text-free "
            "scenes too (an ablation).",
        ),
        TaskSpec(
            "color_all",
            "conversation",
            _color_all,
            "The colour of every object named by its shape, one turn each (a focus task).",
        ),
        TaskSpec(
            "color_all_sparse",
            "conversation",
            _color_all_sparse,
            "color_all for the scenes of two or three objects only; none for the rest (a focus task: easy scenes "
            "first).",
        ),
        TaskSpec(
            "keyed",
            "conversation",
            _keyed,
            "color_all, then one region, one existence and one count-by-shape question per image (a focus task).",
        ),
        TaskSpec(
            "keyed_detail",
            "conversation",
            _keyed_detail,
            "keyed, opened by a detailed description for half the images (a focus task that keeps descriptions).",
        ),
        TaskSpec(
            "position_detail",
            "conversation",
            _position_detail,
            "position_all, opened by a detailed description for half the images (a focus task that keeps "
            "descriptions).",
        ),
        TaskSpec(
            "color_position_detail",
            "conversation",
            _color_position_detail,
            "color_all's and position_all's turns of a scene in one conversation, opened by a detailed description "
            "(1,000-odd phrasings) for half the images (a focus task).",
        ),
        TaskSpec(
            "color_size_detail",
            "conversation",
            _color_size_detail,
            "color_all's turns with the size of every object its shape or colour names and which is the largest and "
            "smallest, in one conversation per scene, opened by a detailed description (1,000-odd phrasings) for half "
            "the images (a focus task).",
        ),
        TaskSpec(
            "color_size_compare",
            "conversation",
            _color_size_compare_detail,
            "color_size_detail's turns and, for every shape held twice in two colours and two clear sizes, the colour "
            "of the larger or the smaller one (a focus task).",
        ),
        TaskSpec(
            "color_size_compare_crowded",
            "conversation",
            _color_size_compare_crowded,
            "color_size_compare for the scenes of four or more objects only; none for the rest (a focus task).",
        ),
        TaskSpec(
            "color_by_size",
            "conversation",
            _color_by_size,
            "The colour of every object a question can name only by its size and shape, and of the larger or smaller "
            "of two same-shape objects; nothing else, and none for a scene without such an object (a focus task).",
        ),
        TaskSpec(
            "dense_detail_counts",
            "conversation",
            _dense_detail_counts,
            "dense_detail with every count of a shape or colour held twice or more and the count of all objects in "
            "place of three random count turns (a focus task).",
        ),
        TaskSpec(
            "multiples",
            "conversation",
            _multiples,
            "For a scene holding a shape or colour twice or more: count_all's turns, how many objects in all, and "
            "color_by_size's turns; none for the rest (a focus task).",
        ),
        TaskSpec(
            "multiples_position",
            "conversation",
            _multiples_position,
            "multiples with position_all's turns of the same scene shuffled in, so that the counting stage keeps "
            "position; none for a scene without a repeat (a focus task).",
        ),
        TaskSpec(
            "color_size_compare_paired",
            "conversation",
            _color_size_compare_paired,
            "color_size_compare for the scenes where a question names an object by its size (a shape held twice, "
            "one of its objects the only one of its size, or two clear sizes); none for the rest (a focus task).",
        ),
        TaskSpec(
            "focus_mix",
            "conversation",
            _focus_mix,
            "One focus conversation per scene: color_size_detail (two in five), position_detail in detail_many's "
            "phrasings (three in ten), keyed or count_all (three in twenty each): the shipped chain's focus stages as "
            "one (a focus task).",
        ),
        TaskSpec(
            "focus_mix_compare",
            "conversation",
            _focus_mix_compare,
            "focus_mix with color_size_compare in place of color_size_detail (the shipped chain's last colour-and-size "
            "focus stage): one focus conversation per scene (a focus task).",
        ),
        TaskSpec(
            "dense_all",
            "conversation",
            _dense_all,
            "Every focus skill of a scene in one conversation: colour by shape, where each object is, up to four "
            "relations, three counts, four existence questions and the colour of the larger / smaller (a focus task).",
        ),
        TaskSpec(
            "dense_detail",
            "conversation",
            _dense_detail,
            "dense_all, opened by a detailed description (1,000-odd phrasings) for half the images (a focus task).",
        ),
        TaskSpec(
            "dense_detail_paired",
            "conversation",
            _dense_detail_paired,
            "dense_detail for the scenes where a question names an object by its size (as "
            "color_size_compare_paired); none for the rest (a focus task).",
        ),
        TaskSpec(
            "count_all",
            "conversation",
            _count_all,
            "How many of each shape and each colour the image holds, plus one absent of each (a focus task).",
        ),
        TaskSpec(
            "exists_all",
            "conversation",
            _exists_all,
            "Is there a <shape> / <colour shape>? for everything the image holds and as many absent, the absent "
            "pairs made of a present colour and a present shape (a focus task).",
        ),
        TaskSpec(
            "region_all",
            "conversation",
            _region_all,
            "Where every uniquely named object is (which ninth of the image), one turn each (a focus task).",
        ),
        TaskSpec(
            "relation_all",
            "conversation",
            _relation_all,
            "Left/right and above/below of up to eight pairs of objects, half as choices, half yes/no (a focus "
            "task).",
        ),
        TaskSpec(
            "position_all",
            "conversation",
            _position_all,
            "region_all and relation_all's turns of each image together (a focus task).",
        ),
        TaskSpec("rl", "prompt", _rl_prompt, "RL prompts: descriptions and short questions, one per scene."),
        TaskSpec("rl_detail", "prompt", _rl_detail_prompt, "RL prompts: one detailed description per scene."),
        TaskSpec(
            "rl_detail_varied",
            "prompt",
            _rl_detail_varied_prompt,
            "RL prompts: one detailed description per scene, asked in 12 phrasings (instruct_varied's).",
        ),
        TaskSpec(
            "rl_detail_count",
            "prompt",
            _rl_detail_count_prompt,
            "RL prompts: a detailed description per scene, a counting question for one scene in five.",
        ),
        TaskSpec(
            "rl_detail_mix",
            "prompt",
            _rl_detail_mix_prompt,
            "RL prompts: a detailed description for three scenes in five, else a short question of instruct's "
            "skills (no reading).",
        ),
        TaskSpec(
            "rl_detail_varied_mix",
            "prompt",
            _rl_detail_varied_mix_prompt,
            "RL prompts: rl_detail_mix with its descriptions asked in rl_detail_varied's 12 phrasings.",
        ),
        TaskSpec(
            "rl_detail_varied_sized",
            "prompt",
            _rl_detail_varied_sized_prompt,
            "RL prompts: rl_detail_varied, with the colour of an object named by its size for three scenes in four "
            "of those that hold two objects of one shape.",
        ),
        TaskSpec("multiturn", "conversation", _mixed("multiturn", 3, 6), "Follow-up questions, 3-6 turns."),
        TaskSpec("detail", "conversation", _single("detail"), "Detailed descriptions."),
        TaskSpec("count", "conversation", _single("count"), "Counting questions."),
        TaskSpec("color", "conversation", _single("color"), "Colour questions."),
        TaskSpec("shape", "conversation", _single("shape"), "Shape questions."),
        TaskSpec("size", "conversation", _single("size"), "Size and largest/smallest questions."),
        TaskSpec("position", "conversation", _single("position"), "Relations and regions."),
        TaskSpec("existence", "conversation", _single("existence"), "Balanced yes/no existence."),
        TaskSpec("ocr", "conversation", _single("ocr"), "Reading printed text."),
        TaskSpec("preference", "preference", _wrap(make_pair), "Grounded vs hallucinated answer pairs."),
        TaskSpec(
            "preference_balanced",
            "preference",
            _wrap(lambda scene, ctx: make_pair(scene, ctx, balanced_counts=True)),
            "preference, with wrong counts as often below the truth as above it (an ablation).",
        ),
        TaskSpec(
            "preference_keep_count",
            "preference",
            _wrap(lambda scene, ctx: make_pair(scene, ctx, keep_count=True)),
            "preference, with rejected descriptions that keep the true count: an invented object replaces a real "
            "one (an ablation).",
        ),
        TaskSpec("pope", "pope", make_pope, "POPE yes/no questions: random, popular, adversarial."),
        TaskSpec("chair", "chair", _wrap(make_chair), "Description prompts with CHAIR ground truth."),
    )
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


def task_context(name: str, scenes: Sequence[Scene], seed: int) -> TaskContext:
    return TaskContext(random.Random(f"toyworld:{name}:{seed}"), WorldStats.from_scenes(list(scenes)))


def build_records(name: str, scenes: Sequence[Scene], seed: int) -> list[Record]:
    """All records of task `name` for `scenes`, in scene order."""
    spec = get_task(name)
    ctx = task_context(name, scenes, seed)
    return [r for scene in scenes for r in spec.make(scene, ctx)]
