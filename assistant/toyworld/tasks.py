"""The task registry: every dataset the toy world makes, built from a list of scenes.

    records = build_records("instruct", scenes, seed=0)

Each task maps one scene to zero or more records; all scenes of a run share one random stream
(seeded by task name and seed) and the run's statistics, so a run is reproducible as a whole.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .pope import make_chair, make_pope
from .preference import make_pair
from .questions import SKILLS, ask_detail
from .records import QA, Conversation, Record, TaskContext, WorldStats
from .scene import Scene

Maker = Callable[[Scene, TaskContext], list[Record]]
FORMATS: tuple[str, ...] = ("conversation", "preference", "pope", "chair")

# skill -> weight in mixed instruction conversations (detail only ever opens one). Colour questions name their
# object by shape and existence negatives swap one attribute, so these two are what teaches finding a shape
# (docs/recipe.md: the model learnt to find objects by colour only while they were rarer).
_MIX: dict[str, int] = {
    "count": 3,
    "color": 3,
    "shape": 2,
    "size": 1,
    "position": 2,
    "existence": 3,
    "ocr": 2,
}


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


def _mixed(task: str, min_turns: int, max_turns: int) -> Maker:
    def make(scene: Scene, ctx: TaskContext) -> list[Record]:
        rng = ctx.rng
        want = rng.randint(min_turns, max_turns)
        turns: list[QA] = []
        if rng.random() < 0.15:
            turns.append(ask_detail(scene, ctx))
        skills = [s for s in _MIX if s != "ocr" or scene.texts]
        weights = [_MIX[s] for s in skills]
        for _ in range(4 * want):
            if len(turns) >= want:
                break
            qa = SKILLS[rng.choices(skills, weights)[0]](scene, ctx)
            # no paraphrase of an earlier turn: one answer per skill and answer value
            if qa is not None and all((qa.task, qa.answer) != (t.task, t.answer) for t in turns):
                turns.append(qa)
        return [Conversation(scene.seed, tuple(turns), task)] if turns else []

    return make


def _wrap(fn: Callable[[Scene, TaskContext], Record]) -> Maker:
    return lambda scene, ctx: [fn(scene, ctx)]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("caption", "conversation", _single("caption"), "Short captions (stage 1 pretraining)."),
        TaskSpec(
            "instruct", "conversation", _mixed("instruct", 1, 4), "Mixed-skill instructions, 1-4 turns."
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
