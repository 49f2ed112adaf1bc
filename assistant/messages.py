"""Chat messages in the shape every part of the stack passes to a processor's chat template (no heavy imports: the
eval runner and the benchmarks use it without loading transformers)."""

from __future__ import annotations

from typing import Any


def user_turn(text: str, images: int = 1) -> list[dict[str, Any]]:
    """The messages of one question: a user turn of `images` image parts, then the text."""
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]
