"""Hallucination benchmarks from ground truth: POPE questions and CHAIR items.

POPE (Li et al. 2023) asks "Is there a {object} in the image?" about objects that are present
(label yes) and as many that are absent (label no), with negatives drawn three ways:
random (any absent object), popular (the absent objects most frequent in the whole run) and
adversarial (the same shape in another colour, or shapes that co-occur most with present ones).
The same positives are asked in every category, so each category is balanced on its own.
"""

from __future__ import annotations

from .describe import describe
from .records import ChairItem, PopeQuestion, TaskContext
from .scene import Scene
from .templates import phrase
from .vocab import COLOR_NAMES, SHAPE_SYNONYMS, SHAPES, article

POPE_CATEGORIES: tuple[str, ...] = ("random", "popular", "adversarial")
POPE_PER_CATEGORY = 3  # positives (and as many negatives) per image and category


def pope_question(item: str) -> str:
    return f"Is there {article(item)} {item} in the image?"


def _items(scene: Scene) -> tuple[set[str], set[str]]:
    """Present and absent POPE items: "color shape" pairs and bare shapes."""
    pairs = {f"{o.color} {o.shape}" for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    every = {f"{c} {s}" for c in COLOR_NAMES for s in SHAPES} | set(SHAPES)
    present = pairs | shapes
    return present, every - present


def _negatives(scene: Scene, ctx: TaskContext, category: str, absent: set[str], k: int) -> list[str]:
    rng, stats = ctx.rng, ctx.stats
    pool = sorted(absent)
    if category == "random":
        return rng.sample(pool, k)

    def freq(item: str) -> int:
        words = item.split()
        return stats.shape_freq[words[0]] if len(words) == 1 else stats.pair_freq[(words[0], words[1])]

    if category == "popular":
        return sorted(pool, key=lambda i: (-freq(i), i))[:k]
    # adversarial: same shape in another colour first, then shapes that co-occur with present ones
    shapes = sorted({o.shape for o in scene.objects})
    same_shape = sorted(
        (i for i in pool if len(i.split()) == 2 and i.split()[1] in shapes), key=lambda i: (-freq(i), i)
    )
    cooc = sorted(
        (i for i in pool if len(i.split()) == 1),
        key=lambda i: (-sum(stats.cooccur[(s, i)] for s in shapes), i),
    )
    ranked = [x for pair in zip(same_shape, cooc, strict=False) for x in pair]
    ranked += [i for i in same_shape + cooc if i not in ranked]
    ranked += [i for i in pool if i not in ranked]
    return ranked[:k]


def make_pope(scene: Scene, ctx: TaskContext) -> list[PopeQuestion]:
    """Balanced yes/no questions for every category; none for an empty scene."""
    present, absent = _items(scene)
    if not scene.objects:
        return []
    pairs = sorted(i for i in present if " " in i)
    k = min(POPE_PER_CATEGORY, len(pairs))
    positives: list[str] = []
    for p in ctx.rng.sample(pairs, k):
        shape = p.split()[1]
        positives.append(shape if ctx.rng.random() < 0.25 and shape not in positives else p)
    out = []
    for category in POPE_CATEGORIES:
        negatives = _negatives(scene, ctx, category, absent, k)
        labelled = [(p, "yes") for p in positives] + [(n, "no") for n in negatives]
        ctx.rng.shuffle(labelled)
        out += [PopeQuestion(scene.seed, pope_question(i), label, category, i) for i, label in labelled]
    return out


def make_chair(scene: Scene, ctx: TaskContext) -> ChairItem:
    """A detailed-description prompt with the ground-truth objects CHAIR scores against."""
    shapes = sorted({o.shape for o in scene.objects})
    return ChairItem(
        scene_seed=scene.seed,
        prompt=phrase(ctx.rng, "detail"),
        reference=describe(scene),
        objects=tuple(shapes),
        colored_objects=tuple(sorted({o.name for o in scene.objects})),
        words=tuple(w for s in shapes for w in SHAPE_SYNONYMS[s]),
    )
