"""Read evaluation sets: the toy world's directories and the standard files (POPE JSONL with a COCO
image directory, CHAIR object lists, MMHal-Bench JSON). Every loader returns plain rows with an
absolute `image_path` and a string `question_id`, plus the files a dataset hash is computed over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clients import EvalError

POPE_CATEGORIES = ("random", "popular", "adversarial")


@dataclass(frozen=True)
class Dataset:
    rows: list[dict[str, Any]]
    files: tuple[Path, ...]  # what the dataset hash covers (record files and images)
    source: str

    def hash(self) -> str:
        return dataset_hash(self.files)


def dataset_hash(files: Iterable[Path]) -> str:
    """sha256 over the files' names and contents, ordered by name and content (not by path, so the same data
    reached through another path, relative or absolute or linked, hashes the same); the first 16 hex digits."""
    digests = sorted(
        (path.name, hashlib.sha256(path.read_bytes()).hexdigest()) for path in {p.resolve() for p in files}
    )
    h = hashlib.sha256()
    for name, digest in digests:
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()[:16]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalError(f"cannot read {path}; check the path given with --data") from exc
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EvalError(
                    f"line {i} of {path} is not JSON; give a JSONL file (one object per line)"
                ) from exc
    return rows


def _record_file(data: Path, name: str) -> Path:
    if data.is_dir():
        if not (data / name).is_file():
            raise EvalError(
                f"{data} has no {name}; give a toy-world dataset of the right task or the file itself"
            )
        return data / name
    if not data.is_file():
        raise EvalError(f"{data} does not exist; give a dataset directory or a JSONL file with --data")
    return data


def _attach_images(rows: list[dict[str, Any]], image_dir: Path, where: Path) -> list[Path]:
    images = []
    for row in rows:
        if "image" not in row:
            raise EvalError(
                f"a row of {where} has no 'image' field; every question needs its image file name"
            )
        path = (image_dir / str(row["image"])).resolve()
        if not path.is_file():
            raise EvalError(
                f"image {row['image']!r} of {where} is not in {image_dir}; pass the right --image-dir"
            )
        row["image_path"] = path
        images.append(path)
    return images


def _require(rows: list[dict[str, Any]], fields: tuple[str, ...], where: Path) -> None:
    for row in rows:
        missing = [f for f in fields if f not in row]
        if missing:
            raise EvalError(f"a row of {where} lacks {missing}; the file must have fields {list(fields)}")


def load_pope(
    data: Path, image_dir: Path | None = None, categories: Iterable[str] = POPE_CATEGORIES
) -> Dataset:
    """A toy-world POPE directory, one POPE JSONL file, or a directory of `coco_pope_<category>.json` files."""
    wanted = tuple(categories)
    bad = [c for c in wanted if c not in POPE_CATEGORIES]
    if bad:
        raise EvalError(f"unknown POPE categories {bad}; choose from {list(POPE_CATEGORIES)}")
    if data.is_dir() and not (data / "pope.jsonl").is_file():
        files = {c: data / f"coco_pope_{c}.json" for c in wanted}
        if not all(f.is_file() for f in files.values()):
            raise EvalError(
                f"{data} has neither pope.jsonl nor coco_pope_<category>.json files; check --data"
            )
    else:
        files = {"": _record_file(data, "pope.jsonl")}
    rows: list[dict[str, Any]] = []
    for category, path in files.items():
        part = read_jsonl(path)
        _require(part, ("question_id", "image", "text", "label"), path)
        for row in part:
            row["category"] = row.get("category") or category or _category_from_name(path)
            row["question_id"] = (
                f"{row['category']}-{row['question_id']}" if category else str(row["question_id"])
            )
        rows += [r for r in part if r["category"] in wanted]
    base = image_dir or (data if data.is_dir() else data.parent)
    images = _attach_images(rows, base, data)
    return Dataset(rows, (*files.values(), *images), str(data))


def _category_from_name(path: Path) -> str:
    return next((c for c in POPE_CATEGORIES if c in path.stem), "random")


def load_qa(data: Path, image_dir: Path | None = None) -> Dataset:
    """Questions with answers: the toy world's qa.jsonl (`question_id, image, text, answer, task, answer_type`)."""
    path = _record_file(data, "qa.jsonl")
    rows = read_jsonl(path)
    _require(rows, ("question_id", "image", "text", "answer"), path)
    for row in rows:
        row["question_id"] = str(row["question_id"])
        row.setdefault("task", "vqa")
        row.setdefault("answer_type", "text")
    scenes = path.parent / "scenes.jsonl"
    if scenes.is_file():  # a toy-world set: how crowded each image is, for the scores by object count
        counts = {r["image"]: len(r.get("objects", ())) for r in read_jsonl(scenes)}
        for row in rows:
            if row["image"] in counts:
                row["n_objects"] = counts[row["image"]]
    images = _attach_images(rows, image_dir or path.parent, data)
    return Dataset(rows, (path, *images), str(data))


def load_chair(data: Path, image_dir: Path | None = None) -> Dataset:
    """CHAIR items: the toy world's chair.jsonl, or any JSONL of `{image_id, image, objects: [category...]}`.
    Beside a toy world's scenes.jsonl, each row also gets its scene's `layout` (objects with size and box), on
    which the descriptions' relation sentences are checked, and its `texts`, on which their quoted text is."""
    path = _record_file(data, "chair.jsonl")
    rows = read_jsonl(path)
    _require(rows, ("image_id", "image", "objects"), path)
    scenes = path.parent / "scenes.jsonl"
    scene_rows = {r["image"]: r for r in read_jsonl(scenes)} if scenes.is_file() else {}
    for row in rows:
        row["question_id"] = str(row["image_id"])
        if row["image"] in scene_rows:
            row["layout"] = scene_rows[row["image"]]["objects"]
            row["texts"] = [t["text"] for t in scene_rows[row["image"]].get("texts", [])]
    images = _attach_images(rows, image_dir or path.parent, data)
    return Dataset(rows, (path, *images), str(data))


# each item-scored benchmark's loader, by the name its report carries (`report.json`'s "benchmark")
LOADERS = {"vqa": load_qa, "pope": load_pope, "chair": load_chair}


def coco_chair_rows(instances_json: Path, image_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """CHAIR rows from a COCO `instances_*.json`: each image's file name and its set of category names."""
    coco = json.loads(instances_json.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    objects: dict[int, set[str]] = {}
    for ann in coco["annotations"]:
        objects.setdefault(ann["image_id"], set()).add(names[ann["category_id"]])
    keep = set(image_ids) if image_ids is not None else None
    return [
        {"image_id": img["id"], "image": img["file_name"], "objects": sorted(objects.get(img["id"], ()))}
        for img in coco["images"]
        if keep is None or img["id"] in keep
    ]


def toyworld_facts(data: Path) -> dict[str, str]:
    """image -> the canonical detailed description of its scene (the judge's ground-truth facts)."""
    from assistant.toyworld import Scene, describe

    scenes = data / "scenes.jsonl"
    if not scenes.is_file():
        return {}
    return {row["image"]: describe(Scene.from_dict(row)) for row in read_jsonl(scenes)}


def load_judge(data: Path, image_dir: Path | None = None) -> Dataset:
    """Questions for the judge: a toy-world directory with qa.jsonl (facts from scenes.jsonl), or an
    MMHal-Bench style JSON list / JSONL with `question`, `gt_answer`, `image_content` and `image`."""
    if data.is_dir() and (data / "qa.jsonl").is_file():
        ds = load_qa(data, image_dir)
        facts = toyworld_facts(data)
        for row in ds.rows:
            row["facts"] = row.get("facts") or facts.get(row["image"], "")
        return Dataset(ds.rows, (*ds.files, *([data / "scenes.jsonl"] if facts else [])), ds.source)
    if not data.is_file():
        raise EvalError(f"{data} is neither a toy-world directory with qa.jsonl nor a JSON/JSONL file")
    text = data.read_text(encoding="utf-8").lstrip()
    rows = json.loads(text) if text.startswith("[") else read_jsonl(data)
    for i, row in enumerate(rows):
        row.setdefault("question_id", str(i))
        row["question_id"] = str(row["question_id"])
        row["text"] = row.get("text") or row.get("question", "")
        row["answer"] = row.get("answer") or row.get("gt_answer", "")
        row["facts"] = row.get("facts") or row.get("image_content", "")
        row.setdefault("image", row.get("image_src", ""))
    images = _attach_images(rows, image_dir or data.parent, data)
    return Dataset(rows, (data, *images), str(data))
