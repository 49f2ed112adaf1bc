"""The conversation as the page shows it: pure functions from the textbox value and the turns to Chatbot messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ui.client import Turn

OCR_TITLE = "OCR text the server read from the images"
EMPTY_ANSWER = "*(the model gave an empty answer)*"


def user_turn(message: dict[str, Any] | str | None) -> Turn | None:
    """The user turn for a MultimodalTextbox value ({"text", "files"}); None when it holds nothing to send."""
    if isinstance(message, str):
        message = {"text": message, "files": []}
    message = message or {}
    text = (message.get("text") or "").strip()
    files = tuple(_file_path(f) for f in message.get("files") or [])
    if not text and not files:
        return None
    return Turn("user", text, images=files)


def _file_path(file: Any) -> str:
    return str(file.get("path") if isinstance(file, dict) else getattr(file, "path", file))


def to_chatbot(turns: Sequence[Turn], streaming: bool = False) -> list[dict[str, Any]]:
    """Chatbot messages for the turns: user images and text, the OCR text used, answers and readable errors.

    While `streaming`, an empty last answer is left out so the Chatbot shows its pending dots instead."""
    messages: list[dict[str, Any]] = []
    for i, turn in enumerate(turns):
        if turn.role == "user":
            content: list[Any] = [{"path": path} for path in turn.images]
            if turn.text:
                content.append(turn.text)
            messages.append({"role": "user", "content": content})
            continue
        if turn.ocr_text:
            messages.append(
                {
                    "role": "assistant",
                    "content": turn.ocr_text,
                    "metadata": {"title": OCR_TITLE, "status": "done"},
                }
            )
        if turn.error:
            messages.append({"role": "assistant", "content": f"⚠️ Error: {turn.error}"})
        elif turn.text:
            messages.append({"role": "assistant", "content": turn.text})
        elif not (streaming and i == len(turns) - 1):
            messages.append({"role": "assistant", "content": EMPTY_ANSWER})
    return messages
