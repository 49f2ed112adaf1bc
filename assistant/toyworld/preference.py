"""Preference pairs: the chosen answer is grounded, the rejected one hallucinates an object,
an attribute or a count (the kinds of hallucination that POPE and CHAIR measure)."""

from __future__ import annotations

import dataclasses

from .describe import describe
from .questions import absent_item, ask_color, ask_count, ask_shape
from .records import PreferencePair, TaskContext
from .scene import ObjectGT, Scene
from .templates import phrase
from .vocab import COLOR_NAMES, SHAPES, SIZES, article


def _wrong_count(ctx: TaskContext, n: int, balanced: bool = False) -> int:
    """A wrong count for a true `n`. The default leans up (3 of 5 above `n`, and 1 only ever loses to 0 or 2-3): over
    the pairs the rejected count is the larger in 72%. `balanced`: as often below `n` as above it, for every `n` > 0
    (arm Pb, docs/recipe.md session 9: it did not stop DPO from costing counting, so the recipe keeps the default)."""
    if n == 0:
        return ctx.rng.choice((1, 2, 3))
    if balanced:
        step = ctx.rng.choice((1, 2)) if n >= 2 else 1
        return n - step if ctx.rng.random() < 0.5 else n + step
    return max(0, n + ctx.rng.choice((-2, -1, 1, 1, 2)))


def _fake_object(scene: Scene, ctx: TaskContext) -> ObjectGT:
    """An object that is not in the scene, somewhere in the image."""
    words = absent_item(scene, ctx, adversarial=False).split()
    shape = words[-1]
    color = words[0] if len(words) == 2 else ctx.rng.choice(COLOR_NAMES)
    px = min(scene.width, scene.height) // 5
    x0, y0 = ctx.rng.randrange(scene.width - px), ctx.rng.randrange(scene.height - px)
    return ObjectGT(shape, color, ctx.rng.choice(SIZES), (x0, y0, x0 + px, y0 + px))


def _hallucinated_description(scene: Scene, ctx: TaskContext, kind: str) -> str:
    objects = list(scene.objects)
    if kind == "attribute" and objects:
        i = ctx.rng.randrange(len(objects))
        o = objects[i]
        if ctx.rng.random() < 0.5:
            objects[i] = dataclasses.replace(
                o, color=ctx.rng.choice([c for c in COLOR_NAMES if c != o.color])
            )
        else:
            objects[i] = dataclasses.replace(o, shape=ctx.rng.choice([s for s in SHAPES if s != o.shape]))
    elif kind == "swap" and objects:
        # a real object replaced by one that is not there, in its place: the stated count stays true
        i = ctx.rng.randrange(len(objects))
        fake = _fake_object(scene, ctx)
        objects[i] = dataclasses.replace(objects[i], shape=fake.shape, color=fake.color)
    elif kind == "count" and objects:
        # duplicate or drop objects so that the stated count is wrong
        n = _wrong_count(ctx, len(objects))
        while len(objects) < n:
            o = ctx.rng.choice(scene.objects)
            objects.append(dataclasses.replace(o, box=_fake_object(scene, ctx).box))
        objects = objects[:n]
    else:
        objects.append(_fake_object(scene, ctx))
    return describe(dataclasses.replace(scene, objects=tuple(objects)))


def make_pair(
    scene: Scene, ctx: TaskContext, balanced_counts: bool = False, keep_count: bool = False
) -> PreferencePair:
    """One pair for the scene: a detailed description (half the time) or a short question. `balanced_counts`: wrong
    counts as often below the truth as above it (`_wrong_count`). `keep_count`: a rejected description never
    misstates how many objects there are: an invented object replaces a real one ("swap") instead of joining them,
    and no description pair is about the count (DPO on the pairs that add objects cost counting; docs/recipe.md,
    arms Pe and Pf)."""
    rng = ctx.rng
    kind = rng.choice(("object", "attribute", "count"))
    if rng.random() < 0.5:
        kind = kind if scene.objects else "object"
        if keep_count and scene.objects:
            kind = "swap" if kind != "attribute" else kind
        rejected = chosen = describe(scene)
        while rejected == chosen:
            rejected = _hallucinated_description(scene, ctx, kind)
        return PreferencePair(scene.seed, phrase(rng, "detail"), chosen, rejected, "detail", kind)
    if kind == "count":
        qa = ask_count(scene, ctx)
        return PreferencePair(
            scene.seed,
            qa.question,
            qa.answer,
            str(_wrong_count(ctx, int(qa.answer), balanced_counts)),
            "count",
            kind,
        )
    if kind == "attribute":
        qa = ask_color(scene, ctx) if rng.random() < 0.5 else ask_shape(scene, ctx)
        if qa is not None:
            pool = COLOR_NAMES if qa.answer_type == "color" else SHAPES
            wrong = rng.choice([v for v in pool if v != qa.answer])
            return PreferencePair(scene.seed, qa.question, qa.answer, wrong, qa.task, kind)
        kind = "object"
    # object: asked about an absent object, the rejected answer claims it is there
    what = absent_item(scene, ctx, adversarial=bool(scene.objects) and rng.random() < 0.5)
    question = phrase(rng, "exists", a_what=f"{article(what)} {what}")
    return PreferencePair(scene.seed, question, "No", "Yes", "existence", "object")
