"""Datasets on disk: every task loads with `datasets`, runs are byte-identical, eval seeds are kept apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.toyworld import EVAL_SEED_BASE, TASKS, make_dataset
from assistant.toyworld.dataset import first_seed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FILES = {
    "conversation": ["llava.json", "messages.jsonl", "qa.jsonl"],
    "preference": ["preference.jsonl"],
    "pope": ["pope.jsonl"],
    "chair": ["chair.jsonl"],
    "prompt": ["prompts.jsonl"],
}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_writes_a_dataset_that_datasets_loads(name: str, tmp_path: Path) -> None:
    from datasets import load_dataset

    preset = "ocr" if name == "ocr" else "tiny"
    out = make_dataset(tmp_path / "out", task=name, n=8, seed=0, preset=preset)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == name and manifest["n"] == 8 and manifest["preset"] == preset
    assert manifest["generator_version"]
    written = {str(p.relative_to(out)) for p in (out / "images").glob("*.png")}
    scene_images = [json.loads(line)["image"] for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert 0 < len(written) == manifest["images"] <= 8 and sorted(written) == scene_images
    fmt = TASKS[name].format
    for fname in [*FILES[fmt], "scenes.jsonl"]:
        ds = load_dataset(
            "json", data_files=str(out / fname), split="train", cache_dir=str(tmp_path / "cache")
        )
        assert len(ds) > 0, fname
        for col in ("image", "images"):
            if col in ds.column_names:
                paths = ds[col] if col == "image" else [p for ps in ds[col] for p in ps]
                assert all((out / p).is_file() for p in paths)
    if fmt == "conversation":
        row = json.loads((out / "llava.json").read_text())[0]
        assert row["conversations"][0]["value"].startswith("<image>\n")
        assert [t["from"] for t in row["conversations"][:2]] == ["human", "gpt"]
        msg = json.loads((out / "messages.jsonl").read_text().splitlines()[0])
        assert msg["messages"][0]["content"][0] == {"type": "image"} and msg["images"] == [row["image"]]
        qa = json.loads((out / "qa.jsonl").read_text().splitlines()[0])
        assert {"question_id", "image", "text", "answer", "task", "answer_type"} <= set(qa)
    if fmt == "preference":
        row = json.loads((out / "preference.jsonl").read_text().splitlines()[0])
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert row["chosen"] != row["rejected"]
    if fmt == "pope":
        rows = [json.loads(line) for line in (out / "pope.jsonl").read_text().splitlines()]
        assert {r["label"] for r in rows} == {"yes", "no"}
        assert {r["category"] for r in rows} == {"random", "popular", "adversarial"}
    if fmt == "prompt":  # the ground truth the RL rewards read: objects, and their layout for relations
        scenes = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
        by_image = {s["image"]: s for s in scenes}
        for line in (out / "prompts.jsonl").read_text().splitlines():
            row = json.loads(line)
            scene = by_image[row["images"][0]]
            assert row["layout"] == scene["objects"]
            assert row["objects"] == [[o["color"], o["shape"]] for o in scene["objects"]]


def test_same_seed_gives_byte_identical_directories(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", task="instruct", n=6, seed=5, preset="standard")
    b = make_dataset(tmp_path / "b", task="instruct", n=6, seed=5, preset="standard")
    c = make_dataset(tmp_path / "c", task="instruct", n=6, seed=6, preset="standard")
    assert tree(a) == tree(b)
    assert tree(a) != tree(c)


def test_only_the_images_a_task_uses_are_written_each_under_its_scene_name(tmp_path: Path) -> None:
    """A task that drops scenes (by-size colour questions need two objects of a shape) writes no image for them;
    each image it keeps has the name and bytes the same scene has in a set that keeps every scene."""
    some = make_dataset(tmp_path / "some", task="color_by_size", n=40, seed=3)
    every = make_dataset(tmp_path / "every", task="caption", n=40, seed=3)
    used = {row["image"] for row in json.loads((some / "llava.json").read_text())}
    written = {str(p.relative_to(some)) for p in (some / "images").glob("*.png")}
    assert written == used and 0 < len(used) < 40
    assert json.loads((some / "manifest.json").read_text())["images"] == len(used)
    assert all((some / name).read_bytes() == (every / name).read_bytes() for name in used)
    scenes = [json.loads(line) for line in (some / "scenes.jsonl").read_text().splitlines()]
    assert {row["image"] for row in scenes} == used
    assert all(row["image"] == f"images/{row['seed'] - 3 + 1:06d}.png" for row in scenes)  # seed 3 is 000001


def test_images_rendered_over_processes_are_the_same_bytes(tmp_path: Path) -> None:
    from assistant.toyworld.writers import MIN_SCENES_PER_WORKER

    n = 2 * MIN_SCENES_PER_WORKER  # enough for two processes
    one = make_dataset(tmp_path / "one", task="color_all", n=n, seed=11)
    two = make_dataset(tmp_path / "two", task="color_all", n=n, seed=11, workers=2)
    assert tree(one) == tree(two) and len(list((two / "images").glob("*.png"))) > n // 2


def test_eval_seed_range_is_reserved(tmp_path: Path) -> None:
    assert first_seed(0, 10, eval_split=True) == EVAL_SEED_BASE
    assert first_seed(EVAL_SEED_BASE - 10, 10, eval_split=False) == EVAL_SEED_BASE - 10
    with pytest.raises(ValueError, match="pass --eval"):
        first_seed(EVAL_SEED_BASE - 5, 10, eval_split=False)
    with pytest.raises(ValueError, match="pass --eval"):
        make_dataset(tmp_path / "x", task="caption", n=1, seed=EVAL_SEED_BASE)
    assert not (tmp_path / "x").exists()
    out = make_dataset(tmp_path / "e", task="caption", n=2, seed=0, eval_split=True)
    seeds = [json.loads(line)["seed"] for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert seeds == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]


def test_non_empty_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = make_dataset(tmp_path / "o", task="caption", n=3, seed=0)
    with pytest.raises(ValueError, match="not empty"):
        make_dataset(out, task="caption", n=2, seed=0)
    make_dataset(out, task="caption", n=2, seed=0, overwrite=True)
    assert len(list((out / "images").glob("*.png"))) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not a toy-world dataset"):
        make_dataset(other, task="caption", n=1, seed=0, overwrite=True)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "assistant.toyworld", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_generate_writes_the_expected_files(tmp_path: Path) -> None:
    r = _cli("generate", "--task", "pope", "--n", "5", "--seed", "0", "--eval", "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    names = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"images", "pope.jsonl", "scenes.jsonl", "manifest.json"} <= names
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["eval"] is True and manifest["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 4]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--task", "caption", "--n", "5", "--seed", str(EVAL_SEED_BASE - 1)], "evaluation range"),
        (["--task", "caption", "--n", "0"], "n must be at least 1"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], words: str, tmp_path: Path) -> None:
    r = _cli("generate", *args, "--out", str(tmp_path / "x"))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_cli_unknown_task_is_refused(tmp_path: Path) -> None:
    r = _cli("generate", "--task", "nope", "--n", "1", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr
