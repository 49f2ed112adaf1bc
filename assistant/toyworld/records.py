"""What tasks produce (conversations, preference pairs, POPE questions, CHAIR items) and the
run-wide context they share (one random stream, dataset statistics, yes/no balance)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from .scene import Scene


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    task: str  # skill: caption, count, color, shape, size, position, existence, ocr, detail
    answer_type: str  # number, yes_no, color, shape, size, object, relation, region, text, free


@dataclass(frozen=True)
class Conversation:
    scene_seed: int
    turns: tuple[QA, ...]
    task: str  # the task that made it


@dataclass(frozen=True)
class PreferencePair:
    scene_seed: int
    question: str
    chosen: str
    rejected: str
    task: str  # the skill the question tests
    hallucination: str  # object | attribute | count


@dataclass(frozen=True)
class PopeQuestion:
    scene_seed: int
    text: str
    label: str  # yes | no
    category: str  # random | popular | adversarial
    object: str  # "red circle" or "circle"


@dataclass(frozen=True)
class ChairItem:
    scene_seed: int
    prompt: str
    reference: str  # a grounded detailed description
    objects: tuple[str, ...]  # canonical shapes present
    colored_objects: tuple[str, ...]  # "red circle", ...
    words: tuple[str, ...]  # every synonym / plural of the present shapes


Record = Conversation | PreferencePair | PopeQuestion | ChairItem


@dataclass(frozen=True)
class WorldStats:
    """Frequencies over all scenes of a run (POPE's "popular" and "adversarial" negatives)."""

    shape_freq: Counter[str]  # scenes containing the shape
    pair_freq: Counter[tuple[str, str]]  # scenes containing the (color, shape)
    cooccur: Counter[tuple[str, str]]  # scenes containing both shapes (ordered pairs)

    @classmethod
    def from_scenes(cls, scenes: list[Scene]) -> WorldStats:
        shape_freq: Counter[str] = Counter()
        pair_freq: Counter[tuple[str, str]] = Counter()
        cooccur: Counter[tuple[str, str]] = Counter()
        for s in scenes:
            shapes = sorted({o.shape for o in s.objects})
            shape_freq.update(shapes)
            pair_freq.update({(o.color, o.shape) for o in s.objects})
            cooccur.update((a, b) for a in shapes for b in shapes if a != b)
        return cls(shape_freq, pair_freq, cooccur)


@dataclass
class TaskContext:
    """Shared by all scenes of one run, in order; `pick_yes` keeps yes/no answers balanced."""

    rng: random.Random
    stats: WorldStats
    tally: Counter[str] = field(default_factory=Counter)

    def pick_yes(self, can_yes: bool = True, can_no: bool = True, key: str = "yes_no") -> bool:
        """Whether the next yes/no question should be a "yes": the answer that is behind so far."""
        if not (can_yes and can_no):
            yes = can_yes
        else:
            lead = self.tally[f"{key}:yes"] - self.tally[f"{key}:no"]
            yes = lead < 0 or (lead == 0 and self.rng.random() < 0.5)
        self.tally[f"{key}:{'yes' if yes else 'no'}"] += 1
        return yes
