"""Training data: LLaVA JSON, TRL messages and preference JSONL (local files or `datasets` hub names), with every
image checked before training. A missing or corrupt image drops its sample and is counted; past `max_skip_share`
the run stops and names the files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, Image, Sequence, load_dataset

from assistant.errors import AssistantError, ImageError
from assistant.images import load_image
from assistant.paths import looks_local, missing_path_message
from assistant.tokenizer import IMAGE_TOKEN

log = logging.getLogger(__name__)

# A toy-world (or any) dataset directory holds one of these; the first present is used.
SFT_FILES = ("messages.jsonl", "llava.json")
PREFERENCE_FILES = ("preference.jsonl",)
PROMPT_FILES = ("prompts.jsonl",)


class DataError(AssistantError):
    """The dataset cannot be used as given."""


@dataclass
class DataReport:
    """What loading the data kept and dropped; written beside the checkpoints."""

    source: str
    rows: int = 0
    kept: int = 0
    skipped: int = 0
    bad_images: list[str] = field(default_factory=list)

    @property
    def skipped_share(self) -> float:
        return self.skipped / self.rows if self.rows else 0.0

    def save(self, out_dir: str | Path) -> None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        data = {**self.__dict__, "skipped_share": self.skipped_share}
        (Path(out_dir) / "data_report.json").write_text(json.dumps(data, indent=1))


def resolve_data_file(source: str | Path, candidates: tuple[str, ...]) -> Path | None:
    """A file given directly, or the first of `candidates` inside a directory; None if not a local path."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        for name in candidates:
            if (path / name).is_file():
                return path / name
        raise DataError(f"{str(path)!r} has none of {list(candidates)}; point --dataset at a data file")
    return None


def llava_to_messages(conversations: list[dict[str, str]]) -> list[dict[str, Any]]:
    """LLaVA's `conversations` ({"from": "human"|"gpt"|"system", "value"}) -> chat messages with image parts."""
    roles = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
    messages = []
    for turn in conversations:
        if turn["from"] not in roles:
            raise DataError(
                f"unknown speaker {turn['from']!r} in a LLaVA conversation; use human, gpt or system"
            )
        pieces = turn["value"].split(IMAGE_TOKEN)
        content: list[dict[str, Any]] = []
        for i, piece in enumerate(pieces):
            if i > 0:
                content.append({"type": "image"})
            piece = piece.strip("\n") if i > 0 or len(pieces) > 1 else piece
            if piece:
                content.append({"type": "text", "text": piece})
        messages.append({"role": roles[turn["from"]], "content": content})
    return messages


def _read_rows(
    source: str | Path, candidates: tuple[str, ...], split: str
) -> tuple[list[dict[str, Any]], Path | None]:
    path = resolve_data_file(source, candidates)
    if path is None and looks_local(str(source)):
        raise DataError(missing_path_message(str(source), "dataset"))
    if path is None:  # a `datasets` hub name
        try:
            return list(load_dataset(str(source), split=split)), None
        except Exception as exc:
            raise DataError(
                f"could not load dataset {str(source)!r}; give a local file/directory or a hub name"
            ) from exc
    if path.suffix == ".json":
        rows = json.loads(path.read_text())
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows, path.parent


def _image_list(row: dict[str, Any]) -> list[str]:
    images = row.get("images", row.get("image"))
    if images is None:
        return []
    return [images] if isinstance(images, str) else list(images)


def _check_images(
    rows: list[dict[str, Any]], root: Path, report: DataReport, max_skip_share: float
) -> list[dict]:
    """Resolve image paths against `root`, drop rows with a missing or corrupt image, stop past the share."""
    kept = []
    for row in rows:
        paths = [str(root / p) if not Path(p).is_absolute() else p for p in _image_list(row)]
        bad = []
        for p in paths:
            try:
                load_image(p)
            except ImageError:
                bad.append(p)
        if bad:
            report.skipped += 1
            report.bad_images.extend(bad)
            continue
        kept.append({**row, "images": paths})
    report.rows, report.kept = len(rows), len(kept)
    if report.skipped:
        log.warning("skipped %d of %d samples with missing or corrupt images", report.skipped, report.rows)
    if report.skipped_share > max_skip_share:
        shown = ", ".join(report.bad_images[:5])
        raise DataError(
            f"{report.skipped} of {report.rows} samples ({report.skipped_share:.1%}) have missing or corrupt images, "
            f"over --max_skip_share {max_skip_share:.1%}; fix or remove them: {shown}"
        )
    return kept


def _checked_dataset(
    rows: list[dict[str, Any]],
    source: str | Path,
    root: Path | None,
    image_root: str | Path | None,
    max_skip_share: float,
    columns: list[str],
) -> tuple[Dataset, DataReport]:
    """Check every image (see `_check_images`), then keep `columns`; images decode to PIL lazily, on access."""
    report = DataReport(source=str(source))
    rows = _check_images(
        rows, Path(image_root) if image_root else (root or Path.cwd()), report, max_skip_share
    )
    dataset = Dataset.from_list([{c: row[c] for c in columns} for row in rows])
    return dataset.cast_column("images", Sequence(Image())), report


def load_sft_dataset(
    source: str | Path,
    image_root: str | Path | None = None,
    max_skip_share: float = 0.01,
    max_samples: int | None = None,
    split: str = "train",
) -> tuple[Dataset, DataReport]:
    """Rows with `messages` (TRL) or `conversations` (LLaVA), and `images`/`image`; returns messages + images."""
    rows, root = _read_rows(source, SFT_FILES, split)
    rows = rows[:max_samples] if max_samples else rows
    for row in rows:
        if "messages" not in row:
            if "conversations" not in row:
                raise DataError("each row needs 'messages' (TRL format) or 'conversations' (LLaVA format)")
            row["messages"] = llava_to_messages(row["conversations"])
    return _checked_dataset(rows, source, root, image_root, max_skip_share, ["messages", "images"])


def load_preference_dataset(
    source: str | Path,
    image_root: str | Path | None = None,
    max_skip_share: float = 0.01,
    max_samples: int | None = None,
    split: str = "train",
) -> tuple[Dataset, DataReport]:
    """Rows with `prompt`, `chosen`, `rejected` (TRL conversational preference format) and `images`."""
    rows, root = _read_rows(source, PREFERENCE_FILES, split)
    rows = rows[:max_samples] if max_samples else rows
    for key in ("prompt", "chosen", "rejected"):
        if rows and key not in rows[0]:
            raise DataError(f"preference rows need 'prompt', 'chosen' and 'rejected'; this one lacks {key!r}")
    columns = ["prompt", "chosen", "rejected", "images"]
    return _checked_dataset(rows, source, root, image_root, max_skip_share, columns)


def load_prompt_dataset(
    source: str | Path,
    image_root: str | Path | None = None,
    max_skip_share: float = 0.01,
    max_samples: int | None = None,
    split: str = "train",
) -> tuple[Dataset, DataReport]:
    """RL prompts: `prompt` (TRL conversational, one image part), `images`, and the ground truth the rewards read:
    `answer` + `answer_type` (short questions, scored like skill VQA) or `answer_type: free` + `objects`
    ([[colour, shape], ...], descriptions), optionally `layout` ([{shape, color, size, box}, ...]: the relation
    sentences of descriptions are then checked) and `texts` (the scene's texts: quoted text in a description is then
    checked). Rows without ground truth count as descriptions of unknown scenes and need a judge reward (not in the
    toy recipe). `objects`, `layout` and `texts` become JSON string columns (`texts` null when a row has none:
    unchecked)."""
    rows, root = _read_rows(source, PROMPT_FILES, split)
    rows = rows[:max_samples] if max_samples else rows
    if rows and "prompt" not in rows[0]:
        raise DataError("prompt rows need 'prompt' (a list of chat messages) and 'images'")
    for row in rows:
        row.setdefault("answer", "")
        row.setdefault("answer_type", "free")
        row["objects"] = json.dumps(row.get("objects", []))
        row["layout"] = json.dumps(row.get("layout", []))
        row["texts"] = json.dumps(row.get("texts"))
    columns = ["prompt", "images", "answer", "answer_type", "objects", "layout", "texts"]
    return _checked_dataset(rows, source, root, image_root, max_skip_share, columns)
