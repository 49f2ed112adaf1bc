"""Example prompts for the chat page, each with a toy-world scene rendered on demand (a few ms, a few KB)."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    question: str
    preset: str  # a preset of assistant.toyworld.PRESETS
    seed: int


EXAMPLES = (
    Example("How many objects are there?", preset="tiny", seed=3),
    Example("Describe the image in detail.", preset="standard", seed=2),
    Example("What words are written in the image?", preset="ocr", seed=6),
)


def render_example(example: Example, directory: Path) -> Path:
    """Render the example's scene to `directory` once; the same preset and seed always give the same file."""
    from assistant.toyworld import generate_scene, get_preset, render

    path = directory / f"toyworld-{example.preset}-{example.seed}.png"
    if not path.is_file():
        image = render(generate_scene(example.seed, get_preset(example.preset)))
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=directory)
        os.close(fd)
        image.save(tmp, format="PNG")
        os.replace(tmp, path)  # atomic: two UIs starting together never see half a file
    return path


def example_inputs(
    directory: Path | None = None, examples: tuple[Example, ...] = EXAMPLES
) -> list[dict[str, object]]:
    """MultimodalTextbox values ({"text", "files"}) for the examples, images rendered into `directory`."""
    directory = directory or Path(tempfile.gettempdir()) / "assistant-ui-examples"
    directory.mkdir(parents=True, exist_ok=True)
    values = [{"text": e.question, "files": [str(render_example(e, directory))]} for e in examples]
    log.debug("example images in %s", directory)
    return values
