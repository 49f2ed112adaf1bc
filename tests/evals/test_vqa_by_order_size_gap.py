"""scripts/vqa_by_order.py's size gap: the width gap between the object a question names by size and its shape's
nearest other object (docs/recipe.md, session 26); its object-count groups (`--by_objects`, session 35); and its
batched answers (`--batch_size`, session 40)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vqa_by_order.py"


def _script():
    spec = importlib.util.spec_from_file_location("vqa_by_order", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _size_gap():
    return _script().size_gap


def _obj(shape: str, size: str, x0: int, width: int) -> dict:
    return {"shape": shape, "color": "red", "size": size, "box": [x0, 0, x0 + width, width]}


def test_size_gap_is_the_width_gap_to_the_nearest_other_object_of_the_named_shape():
    size_gap = _size_gap()
    scene = {
        "objects": [
            _obj("heart", "small", 0, 30),
            _obj("heart", "medium", 40, 37),
            _obj("heart", "large", 80, 46),
            _obj("star", "small", 0, 29),
        ]
    }
    assert size_gap(scene, "What colour is the small heart?") == 7
    assert size_gap(scene, "What colour is the large heart?") == 9
    assert size_gap(scene, "What colour is the medium heart?") == 7
    assert size_gap(scene, "What colour is the heart?") is None  # not named by size
    assert size_gap(scene, "What colour is the small star?") is None  # no other star


def test_object_bucket_groups_scenes_as_the_colour_goal_does():
    bucket = _script().object_bucket
    heart = _obj("heart", "small", 0, 30)
    assert [bucket({"objects": [heart] * n}) for n in range(7)] == ["1", "1", "2-3", "2-3", "4+", "4+", "4+"]


def test_groups_score_a_question_in_its_task_and_each_asked_group():
    script = _script()
    args = script.argparse.Namespace(
        by_answer=True, by_answer_type=True, by_question=r"\bleft\b", by_objects=True, by_size_gap=False
    )
    row = {
        "task": "position",
        "answer": "left",
        "answer_type": "relation",
        "text": "Is the star left of the heart?",
    }
    scene = {"objects": [_obj("star", "small", 0, 30), _obj("heart", "large", 50, 40)]}
    assert script.groups(row, scene, args) == [
        "position",
        "position=left",
        "position (relation)",
        "position (matches '\\\\bleft\\\\b')",
        "position (2-3 objects)",
    ]
    bare = script.argparse.Namespace(
        by_answer=False, by_answer_type=False, by_question=None, by_objects=False, by_size_gap=False
    )
    assert script.groups(row, None, bare) == ["position"]


def test_batched_answers_score_as_one_at_a_time_and_the_embedded_model_sees_colour(tmp_path):
    """The script answers in batches (`--batch_size`); the groups it reports are those of one question at a time,
    and on colour questions of held-out scenes the embedded model is far above chance (1 in 8 colours)."""
    from assistant.toyworld import make_dataset

    data = make_dataset(tmp_path / "color", task="color", n=12, seed=5_900_000, eval_split=True)
    argv = ["--model", "default", "--data", str(data), "--limit", "12", "color", "--by_objects"]
    one = _script().main([*argv, "--batch_size", "1"])
    batched = _script().main([*argv, "--batch_size", "5"])
    assert batched == one
    assert set(one) >= {"color"} and any(key.startswith("color (") for key in one)
    assert one["color"] >= 0.75
