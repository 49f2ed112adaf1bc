"""One question of one skill about a scene, with its short canonical answer.

Each `ask_*` returns a `QA` or None when the scene has nothing that skill can ask unambiguously.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from . import relations as rel
from .describe import caption, describe, join_words
from .records import QA, TaskContext
from .scene import ObjectGT, Scene
from .templates import phrase
from .vocab import COLOR_NAMES, SHAPES, TEXT_KINDS, article, plural

YES, NO = "Yes", "No"
_TEXT_READERS = {"sign": "read_sign", "price": "read_price", "number": "read_number", "word": "read_word"}


def yes_no(flag: bool) -> str:
    return YES if flag else NO


def ask_caption(scene: Scene, ctx: TaskContext) -> QA:
    return QA(phrase(ctx.rng, "caption_prompt"), caption(scene, ctx.rng), "caption", "free")


def ask_detail(scene: Scene, ctx: TaskContext, templates: str = "detail") -> QA:
    return QA(phrase(ctx.rng, templates), describe(scene), "detail", "free")


def ask_count(scene: Scene, ctx: TaskContext) -> QA:
    rng = ctx.rng
    mode = rng.choice(("all", "shape", "color", "pair"))
    if mode == "all":
        return total_count_question(rng, scene)
    # ask about something present two times out of three, else anything (often absent -> "0")
    present = rng.random() < 2 / 3 and scene.objects
    ref = rng.choice(scene.objects) if present else None
    shape = ref.shape if ref else rng.choice(SHAPES)
    color = ref.color if ref else rng.choice(COLOR_NAMES)
    if mode == "shape":
        what, n = plural(shape), rel.count(scene, shape=shape)
    elif mode == "color":
        what, n = f"{color} objects", rel.count(scene, color=color)
    else:
        what, n = f"{color} {plural(shape)}", rel.count(scene, shape=shape, color=color)
    return count_question(rng, what, n)


def total_count_question(rng: random.Random, scene: Scene) -> QA:
    """ "How many objects are in the image?" answered with the scene's number of objects."""
    return QA(phrase(rng, "count_all"), str(len(scene.objects)), "count", "number")


def count_question(rng: random.Random, what: str, n: int) -> QA:
    """ "How many {what} are there?" answered `n` (`what`: "stars", "red objects", "red stars")."""
    return QA(phrase(rng, "count", what=what), str(n), "count", "number")


def refer_by_shape(scene: Scene, obj: ObjectGT) -> str | None:
    """A name for `obj` that does not give its colour away: its shape, else its size and shape, if either is
    unique."""
    return _refer(scene, obj, "size")


def refer_by_color(scene: Scene, obj: ObjectGT) -> str | None:
    """A name for `obj` that does not give its size away: its shape, else its colour and shape, if either is
    unique."""
    return _refer(scene, obj, "color")


def refer_by_color_only(scene: Scene, obj: ObjectGT) -> str | None:
    """A name for `obj` that does not give its shape away: its colour, else its size and colour, if either is
    unique ("red", "small red")."""
    return _refer(scene, obj, "size", key="color")


def pick_by_shape(scene: Scene, ctx: TaskContext) -> tuple[ObjectGT, str] | None:
    """A random object that `refer_by_shape` can name, with that name."""
    return _pick_named(scene, ctx, "size")


def _refer(scene: Scene, obj: ObjectGT, extra: str, key: str = "shape") -> str | None:
    """ "star", else "<extra> star" (extra: "color" or "size"), whichever names only `obj`; with `key="color"`,
    "red", else "<extra> red"."""
    named = getattr(obj, key)
    if rel.count(scene, **{key: named}) == 1:
        return named
    value = getattr(obj, extra)
    same = [o for o in scene.objects if getattr(o, key) == named and getattr(o, extra) == value]
    return f"{value} {named}" if len(same) == 1 else None


def _pick_named(scene: Scene, ctx: TaskContext, extra: str) -> tuple[ObjectGT, str] | None:
    options = [(o, name) for o in scene.objects if (name := _refer(scene, o, extra))]
    return ctx.rng.choice(options) if options else None


def ask_color(scene: Scene, ctx: TaskContext) -> QA | None:
    pick = pick_by_shape(scene, ctx)  # the name must not give the colour away
    if pick is None:
        return None
    obj, name = pick
    return QA(phrase(ctx.rng, "color", name=name), obj.color, "color", "color")


def ask_shape(scene: Scene, ctx: TaskContext) -> QA | None:
    uniq = [o for o in scene.objects if rel.count(scene, color=o.color) == 1]
    if not uniq:
        return None
    obj = ctx.rng.choice(uniq)
    return QA(phrase(ctx.rng, "shape", name=f"{obj.color} object"), obj.shape, "shape", "shape")


def ask_lone(scene: Scene, ctx: TaskContext) -> QA | None:
    """ "What shape/colour is the object?" about a scene's only object: the question names no key, so the answer
    must come from reading the object (stage 2 otherwise only ever names an object by colour or shape)."""
    if len(scene.objects) != 1:
        return None
    obj, rng = scene.objects[0], ctx.rng
    if rng.random() < 0.5:
        return QA(phrase(rng, "shape", name="object"), obj.shape, "shape", "shape")
    return QA(phrase(rng, "color", name="object"), obj.color, "color", "color")


def ask_inventory(scene: Scene, ctx: TaskContext) -> QA | None:
    """Every shape (or colour) in the scene, left to right, each once: "circle, star and heart"."""
    if not scene.objects:
        return None
    attr = ctx.rng.choice(("shape", "color"))
    ordered = sorted(scene.objects, key=lambda o: (o.box[0], o.box[1]))
    values = list(dict.fromkeys(getattr(o, attr) for o in ordered))
    return QA(phrase(ctx.rng, f"inventory_{attr}"), join_words(values), "inventory", "free")


def ask_size(scene: Scene, ctx: TaskContext) -> QA | None:
    rng = ctx.rng
    extremes = [(w, o) for w, o in (("largest", rel.largest(scene)), ("smallest", rel.smallest(scene))) if o]
    if extremes and rng.random() < 0.5:
        which, obj = rng.choice(extremes)
        return QA(phrase(rng, "extreme", which=which), obj.name, "size", "object")
    pick = _pick_named(scene, ctx, "color")
    if pick is None:
        return None
    obj, name = pick
    return QA(phrase(rng, "size", name=name), obj.size, "size", "size")


def ask_position(scene: Scene, ctx: TaskContext) -> QA | None:
    rng = ctx.rng
    named = [(o, n) for o in scene.objects if (n := rel.unique_name(scene, o))]
    pairs = [(a, na, b, nb) for a, na in named for b, nb in named if a is not b and rel.relation(a, b)]
    kind = rng.choice(("yes_no", "choice", "region"))
    if kind == "region" or not pairs:
        if not named:
            return None
        obj, name = rng.choice(named)
        return QA(phrase(rng, "region", name=name), rel.region(scene, obj), "position", "region")
    a, na, b, nb = rng.choice(pairs)
    yes = None if kind == "choice" else ctx.pick_yes(key="position")
    return relation_question(rng, na, nb, rng.choice(rel.relation(a, b)), yes)


def relation_question(rng: random.Random, a: str, b: str, holds: str, yes: bool | None) -> QA:
    """A question on where the object named `a` stands relative to the one named `b`, given a relation that
    `holds` ("left", ...): a choice ("Is the star left or right of the circle?") when `yes` is None, else a yes/no
    question that says the relation (answer "Yes") or its opposite ("No")."""
    if yes is None:
        key = "rel_choice_h" if holds in ("left", "right") else "rel_choice_v"
        return QA(phrase(rng, key, a=a, b=b), holds, "position", "relation")
    said = rel.RELATION_PHRASES[holds if yes else rel.OPPOSITE[holds]]
    return QA(phrase(rng, "rel_yes_no", a=a, b=b, rel=said), yes_no(yes), "position", "yes_no")


def absent_item(scene: Scene, ctx: TaskContext, adversarial: bool) -> str:
    """An object description ("blue star" or "star") that matches nothing in the scene."""
    rng = ctx.rng
    present_pairs = {(o.color, o.shape) for o in scene.objects}
    present_shapes = {o.shape for o in scene.objects}
    if adversarial and scene.objects:
        # one attribute of a present object swapped: only the other one decides the answer, so a model must
        # check the shape as well as the colour (a colour-only reader says "yes" to "red star" beside a red circle)
        obj = rng.choice(scene.objects)
        if rng.random() < 0.5:
            options = [f"{c} {obj.shape}" for c in COLOR_NAMES if (c, obj.shape) not in present_pairs]
        else:
            options = [f"{obj.color} {s}" for s in SHAPES if s not in present_shapes]
        if options:
            return rng.choice(options)
    absent_shapes = [s for s in SHAPES if s not in present_shapes]
    if absent_shapes and rng.random() < 0.4:
        return rng.choice(absent_shapes)
    pairs = [(c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in present_pairs]
    c, s = rng.choice(pairs)
    return f"{c} {s}"


def ask_existence(scene: Scene, ctx: TaskContext) -> QA:
    rng = ctx.rng
    yes = ctx.pick_yes(can_yes=bool(scene.objects), key="existence")
    if yes:
        obj = rng.choice(scene.objects)
        what = obj.shape if rng.random() < 0.3 else obj.name
    else:
        what = absent_item(scene, ctx, adversarial=rng.random() < 0.5)
    return exists_question(rng, what, yes)


def exists_question(rng: random.Random, what: str, yes: bool) -> QA:
    """ "Is there a {what} in the image?" answered Yes or No (`what`: "star", "red star")."""
    return QA(phrase(rng, "exists", a_what=f"{article(what)} {what}"), yes_no(yes), "existence", "yes_no")


def ask_shape_exists(scene: Scene, ctx: TaskContext) -> QA:
    """ "Is there a star?": a bare shape, present or absent, so the answer cannot come from a colour word."""
    rng = ctx.rng
    present = sorted({o.shape for o in scene.objects})
    absent = [s for s in SHAPES if s not in present]
    yes = ctx.pick_yes(can_yes=bool(present), can_no=bool(absent), key="existence")
    what = rng.choice(present) if yes else rng.choice(absent)
    return exists_question(rng, what, yes)


def ask_shape_count(scene: Scene, ctx: TaskContext) -> QA:
    """ "How many stars are there?": counting by shape alone, present two times out of three."""
    rng = ctx.rng
    present = rng.random() < 2 / 3 and scene.objects
    shape = rng.choice(scene.objects).shape if present else rng.choice(SHAPES)
    return count_question(rng, plural(shape), rel.count(scene, shape=shape))


def ask_ocr(scene: Scene, ctx: TaskContext) -> QA:
    rng = ctx.rng
    texts = rel.reading_order(scene.texts)
    if not texts or rng.random() < 0.15:
        return QA(phrase(rng, "has_text"), yes_no(bool(texts)), "ocr", "yes_no")
    kinds = [t.kind for t in texts]
    mode = rng.choice(("single", "all", "has_word"))
    single = [t for t in texts if kinds.count(t.kind) == 1]
    if mode == "single" and single:
        t = rng.choice(single)
        return QA(phrase(rng, _TEXT_READERS[t.kind]), t.text, "ocr", "text")
    if mode == "has_word":
        yes = ctx.pick_yes(key="ocr")
        present = {t.text for t in texts}
        pool = [w for ws in TEXT_KINDS.values() for w in ws if w not in present]
        text = rng.choice(texts).text if yes else rng.choice(pool)
        return QA(phrase(rng, "has_word", text=text), yes_no(yes), "ocr", "yes_no")
    return QA(phrase(rng, "read_all"), " ".join(t.text for t in texts), "ocr", "text")


SKILLS: dict[str, Callable[[Scene, TaskContext], QA | None]] = {
    "count": ask_count,
    "color": ask_color,
    "shape": ask_shape,
    "size": ask_size,
    "position": ask_position,
    "existence": ask_existence,
    "ocr": ask_ocr,
    "lone": ask_lone,
    "inventory": ask_inventory,
    "shape_exists": ask_shape_exists,
    "shape_count": ask_shape_count,
    "detail": ask_detail,
    "caption": ask_caption,
}
