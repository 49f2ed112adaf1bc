"""The toy world: seeded procedural scenes with full ground truth, and every dataset made from them.

from assistant.toyworld import PRESETS, generate_scene, render
scene = generate_scene(0, PRESETS["tiny"])
image = render(scene)  # PIL RGB image; scene.objects / scene.texts are the ground truth
"""

from .dataset import EVAL_SEED_BASE, make_dataset
from .describe import caption, describe
from .generate import generate_scene
from .records import QA, ChairItem, Conversation, PopeQuestion, PreferencePair
from .render import render
from .scene import PRESETS, Background, ObjectGT, Scene, SceneConfig, TextGT, get_preset
from .tasks import TASKS, build_records, get_task
from .vocab import COLORS, SHAPES, canonical_shapes, chair_words

__all__ = [
    "EVAL_SEED_BASE",
    "PRESETS",
    "QA",
    "TASKS",
    "COLORS",
    "SHAPES",
    "Background",
    "ChairItem",
    "Conversation",
    "ObjectGT",
    "PopeQuestion",
    "PreferencePair",
    "Scene",
    "SceneConfig",
    "TextGT",
    "build_records",
    "canonical_shapes",
    "caption",
    "chair_words",
    "describe",
    "generate_scene",
    "get_preset",
    "get_task",
    "make_dataset",
    "render",
]
