"""The OCR text as a hint for the model's user turn."""

from __future__ import annotations

from .types import OCRResult

HINT_PREFIX = "Text in the image (OCR):"


def format_hint(result: OCRResult, max_chars: int = 2000) -> str:
    """`"Text in the image (OCR): STOP | $4.75"`-style hint, lines joined by " | "; "" when there is no text.

    Longer text is cut at a line boundary to `max_chars` and marked with "...".
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    pieces = [line.text.strip() for line in result.lines if line.text.strip()]
    if not pieces:
        return ""
    body = ""
    for piece in pieces:
        candidate = f"{body} | {piece}" if body else piece
        if len(candidate) > max_chars:
            body = f"{body} ..." if body else piece[:max_chars] + "..."
            break
        body = candidate
    return f"{HINT_PREFIX} {body}"


def insert_hint(parts: list[dict], hint: str) -> list[dict]:
    """The user turn's parts with the hint as a text part before its first text (after the images), as the
    service sends it and as the recipe trains it: `<image>\\n{hint}\\n{question}`. An empty hint changes nothing."""
    if not hint.strip():
        return list(parts)
    first_text = next((j for j, p in enumerate(parts) if p.get("type") == "text"), len(parts))
    return [*parts[:first_text], {"type": "text", "text": hint.strip() + "\n"}, *parts[first_text:]]
