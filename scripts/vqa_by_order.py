"""Skill-VQA accuracy by task with the question placed after the image (as training writes it) or before it (as
many OpenAI-API clients send it): the diagnostic of docs/recipe.md, session 13.

    python scripts/vqa_by_order.py --model runs/armD/stage2 --data runs/armD/data/eval_vqa --order text_first color
    python scripts/vqa_by_order.py --model M --data D --limit 3000 color --by_question '\\b(small|medium|large)\\b'
    python scripts/vqa_by_order.py --model M --data D --limit 3000 color --by_size_gap
    python scripts/vqa_by_order.py --model M --data D --limit 500 color --by_objects
    python scripts/vqa_by_order.py --model M --data D --limit 600 position --by_answer_type   # relations apart

The first `--limit` rows of the set (read and checked by the evals' `load_qa`), free-form questions dropped (as
`assistant eval vqa --limit` selects them), answered greedily in-process, 16 questions in one batched `generate`
(`--batch_size`; the eval runner's default), and scored by the evals' parser (`evals.vqa.answer_credit`). `--model
default` is the embedded model.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from assistant.inference import Assistant
from assistant.messages import user_turn
from assistant.paths import resolve_model_source
from evals.data import load_qa
from evals.vqa import UNSCORED_TYPES, answer_credit

log = logging.getLogger("vqa_by_order")


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Score the set as the options say; log and return each group's accuracy."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tasks", nargs="*", help="Tasks to score (default: all).")
    parser.add_argument(
        "--model", required=True, help="A model directory, a hub id, or `default` (the embedded model)."
    )
    parser.add_argument("--data", required=True, help="A toy-world instruct eval set (qa.jsonl and images).")
    parser.add_argument("--order", choices=("image_first", "text_first"), default="image_first")
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument(
        "--batch_size",
        type=int,
        default=16,
        help="Questions answered in one batched generate (Assistant.chat_batch; the same greedy answers as one at a "
        "time up to float rounding).",
    )
    parser.add_argument(
        "--by_answer",
        action="store_true",
        help="Also score each task by its expected answer (counts: 0, 1, 2, ...).",
    )
    parser.add_argument(
        "--by_answer_type",
        action="store_true",
        help="Also score each task by its questions' answer type (position: region, relation, yes_no).",
    )
    parser.add_argument(
        "--by_question",
        metavar="REGEX",
        help="Also score each task by whether its question matches REGEX (for example '\\b(small|medium|large)\\b': "
        "colour questions that name the object by its size).",
    )
    parser.add_argument(
        "--by_size_gap",
        action="store_true",
        help="Also score questions that name their object by size and shape ('the small heart') by the width gap, in "
        "px, between that object and the nearest other object of its shape (the set's scenes.jsonl).",
    )
    parser.add_argument(
        "--by_objects",
        action="store_true",
        help="Also score each task by the number of objects in its scene (1, 2-3, 4+; the set's scenes.jsonl).",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = Path(args.data)
    rows = [
        r
        for r in load_qa(data).rows[: args.limit]
        if r["answer_type"] not in UNSCORED_TYPES and (not args.tasks or r["task"] in args.tasks)
    ]
    scenes = {}
    if args.by_size_gap or args.by_objects:
        lines = (data / "scenes.jsonl").read_text().splitlines()
        scenes = {s["image"]: s for s in map(json.loads, filter(None, lines))}
    assistant = Assistant.load(resolve_model_source(args.model), device="cpu")
    credit = defaultdict(list)
    with tqdm(total=len(rows), desc=args.order) as bar:
        for start in range(0, len(rows), args.batch_size):
            batch = rows[start : start + args.batch_size]
            answers = assistant.chat_batch(
                [question(row, args.order) for row in batch], max_new_tokens=16, temperature=0.0
            )
            for row, answer in zip(batch, answers, strict=True):
                score = answer_credit(row["answer_type"], row["answer"], answer.text)[0]
                for key in groups(row, scenes[row["image"]] if scenes else None, args):
                    credit[key].append(score)
            bar.update(len(batch))
    accuracy = {task: sum(values) / len(values) for task, values in sorted(credit.items())}
    for task, value in accuracy.items():
        log.info("%s, %s: %.3f (n=%d)", args.model, task, value, len(credit[task]))
    return accuracy


def question(row: dict, order: str) -> tuple[list[dict], list[str]]:
    """The one-turn conversation asking `row`'s question about its image (`user_turn`, or the text first), and the
    image, as `Assistant.chat_batch` takes them."""
    if order == "text_first":
        messages = [
            {"role": "user", "content": [{"type": "text", "text": row["text"] + "\n"}, {"type": "image"}]}
        ]
    else:
        messages = user_turn(row["text"])
    return messages, [str(row["image_path"])]


def groups(row: dict, scene: dict | None, args: argparse.Namespace) -> list[str]:
    """The groups a question is scored in: its task, and those the `--by_*` options ask for."""
    keys = [row["task"]]
    if args.by_answer:
        keys.append(f"{row['task']}={row['answer']}")
    if args.by_answer_type:
        keys.append(f"{row['task']} ({row['answer_type']})")
    if args.by_question:
        matched = "matches" if re.search(args.by_question, row["text"]) else "does not match"
        keys.append(f"{row['task']} ({matched} {args.by_question!r})")
    if args.by_objects:
        keys.append(f"{row['task']} ({object_bucket(scene)} objects)")
    gap = size_gap(scene, row["text"]) if args.by_size_gap else None
    if gap is not None:
        bucket = next((b for top, b in ((3, "0-3"), (6, "4-6"), (10, "7-10")) if gap <= top), "> 10")
        keys.append(f"{row['task']} (size gap {bucket} px)")
    return keys


def object_bucket(scene: dict) -> str:
    """The scene's object count as `--by_objects` groups it: "1" (or none), "2-3" or "4+" (the colour goal's crowded
    scenes)."""
    n = len(scene["objects"])
    return "1" if n <= 1 else "2-3" if n <= 3 else "4+"


def size_gap(scene: dict, question: str) -> int | None:
    """For a question that names its object by size and shape, the width gap in px between that object and the
    nearest other object of its shape (the size word is unique among them); None for any other question."""
    named = re.search(r"\b(small|medium|large) (\w+)", question)
    if not named:
        return None
    size, shape = named.groups()
    same = [o for o in scene["objects"] if o["shape"] == shape]
    target = [o for o in same if o["size"] == size]
    others = [o for o in same if o["size"] != size]
    if len(target) != 1 or not others:
        return None
    width = lambda o: o["box"][2] - o["box"][0]  # noqa: E731
    return min(abs(width(target[0]) - width(o)) for o in others)


if __name__ == "__main__":
    main()
