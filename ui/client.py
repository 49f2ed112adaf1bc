"""A client of any OpenAI-compatible chat API: streams answers to conversations with images and turns every
API failure into one readable sentence. The UI's only way to the model.

client = ChatClient(ClientConfig(base_url="http://127.0.0.1:8000/v1", api_key="secret"))
turns = [Turn("user", "How many objects are there?", images=("scene.png",))]
async for event in client.stream(turns, ChatOptions(temperature=0.0, max_tokens=64, ocr="auto")):
    print(event.text, end="")
"""

from __future__ import annotations

import base64
import logging
import mimetypes
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import openai
from openai import AsyncOpenAI

log = logging.getLogger(__name__)

OCR_MODES = ("off", "auto", "on")
# an extra field of a stream chunk that carries the OCR text the server used, if the server sends one
OCR_TEXT_FIELD = "ocr_text"
CODE_HINTS = {  # what to do in the chat page, by the error code of an OpenAI-shaped error body
    "invalid_image": "attach a smaller image, or a PNG, JPEG, GIF or WebP one",
    "too_many_images": "clear the conversation (earlier images are sent again) or attach fewer",
    "request_too_large": "clear the conversation (earlier images are sent again) or attach smaller images",
    "context_length_exceeded": "clear the conversation or lower max tokens",
}
STATUS_HINTS = {
    401: "start the UI with the server's key (--api-key)",
    403: "start the UI with a key that may use this model (--api-key)",
    404: "check --api-base (it usually ends in /v1) and --model",
    429: "the server is busy; wait a moment and ask again",
}


class ChatError(Exception):
    """A failed request, described in one sentence that says what to do; safe to show to the user."""


@dataclass
class ClientConfig:
    base_url: str = field(
        metadata={"help": "Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1."}
    )
    api_key: str | None = field(default=None, metadata={"help": "Bearer key; None for servers without auth."})
    model: str | None = field(
        default=None, metadata={"help": "Model id; None: the first one /v1/models lists."}
    )
    timeout_s: float = field(default=300.0, metadata={"help": "Time limit for one answer, in seconds."})

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must start with http:// or https://, got {self.base_url!r}; "
                "pass e.g. http://127.0.0.1:8000/v1"
            )
        self.base_url = self.base_url.rstrip("/")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.api_key == "":
            self.api_key = None
        if self.model == "":
            self.model = None


@dataclass(frozen=True)
class ChatOptions:
    temperature: float = field(default=0.2, metadata={"help": "Sampling temperature; 0 is greedy."})
    max_tokens: int = field(default=256, metadata={"help": "Most tokens in one answer."})
    ocr: str = field(
        default="auto", metadata={"help": "Server OCR hints: off, auto (if text is seen) or on."}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.ocr not in OCR_MODES:
            raise ValueError(f"ocr must be one of {list(OCR_MODES)}, got {self.ocr!r}")


@dataclass(frozen=True)
class Turn:
    """One message of the conversation as the UI keeps it. Failed turns stay on screen but are not sent again."""

    role: Literal["user", "assistant"]
    text: str = ""
    images: tuple[str, ...] = ()  # image file paths (user turns only)
    ocr_text: str | None = None  # OCR text the server used for this answer (assistant turns)
    error: str | None = None  # why this answer failed (assistant turns)
    failed: bool = False  # leave this turn out of the history sent back


@dataclass(frozen=True)
class StreamEvent:
    text: str = ""  # the next piece of the answer
    ocr_text: str | None = None
    finish_reason: str | None = None


def image_data_url(path: str | Path) -> str:
    """A base64 `data:` URL of an image file; the server checks that the bytes really are an image."""
    mime = mimetypes.guess_type(str(path))[0]
    if not mime or not mime.startswith("image/"):
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def to_api_messages(turns: Sequence[Turn], system: str | None = None) -> list[dict[str, Any]]:
    """OpenAI chat messages for the conversation: images as `image_url` parts, failed turns left out."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        if turn.failed:
            continue
        if turn.role == "user":
            parts: list[dict[str, Any]] = [
                {"type": "image_url", "image_url": {"url": image_data_url(p)}} for p in turn.images
            ]
            if turn.text:
                parts.append({"type": "text", "text": turn.text})
            messages.append({"role": "user", "content": parts})
        else:
            messages.append({"role": "assistant", "content": turn.text})
    return messages


def parse_chunk(chunk: Any) -> StreamEvent | None:
    """The text delta, finish reason and OCR text (if the server sends the extra field) of one stream chunk."""
    extra = getattr(chunk, "model_extra", None) or {}
    ocr_text = extra.get(OCR_TEXT_FIELD)
    ocr_text = ocr_text if isinstance(ocr_text, str) and ocr_text.strip() else None
    text, finish = "", None
    if chunk.choices:
        choice = chunk.choices[0]
        text = choice.delta.content or "" if choice.delta else ""
        finish = choice.finish_reason
    if not text and not finish and ocr_text is None:
        return None
    return StreamEvent(text=text, ocr_text=ocr_text, finish_reason=finish)


def describe_error(exc: openai.OpenAIError, base_url: str, timeout_s: float | None = None) -> str:
    """One sentence for the user: the server's own message when it sent one, else what went wrong and what to do."""
    if isinstance(exc, openai.APITimeoutError):
        limit = f" within {timeout_s:g} s" if timeout_s else ""
        return f"the API at {base_url} did not answer{limit}; ask again or lower max tokens"
    if isinstance(exc, openai.APIConnectionError):
        return (
            f"cannot reach the API at {base_url}; check that the server is running and the address is right"
        )
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    status = getattr(exc, "status_code", None)
    if not isinstance(message, str) or not message.strip():
        if status is None:
            return "the API failed while answering; ask again"
        message = f"the API answered HTTP {status}"
        hint = STATUS_HINTS.get(status, "check the server's log")
        return f"{message}; {hint}"
    message = message.strip().rstrip(".")
    if status is not None:
        message = f"{message} (HTTP {status})"
    hint = CODE_HINTS.get(str(body.get("code"))) or STATUS_HINTS.get(status or 0)
    return f"{message}; {hint}" if hint else message


class ChatClient:
    """Streams chat completions from one OpenAI-compatible server; holds no conversation state."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._model: str | None = config.model

    def _api(self) -> AsyncOpenAI:
        # one HTTP client per answer: the UI's event loop and a test's asyncio.run never share a connection
        return AsyncOpenAI(
            base_url=self.config.base_url,
            api_key=self.config.api_key or "none",
            max_retries=0,
            timeout=self.config.timeout_s,
        )

    def _error(self, exc: openai.OpenAIError) -> ChatError:
        return ChatError(describe_error(exc, self.config.base_url, self.config.timeout_s))

    async def model(self) -> str:
        """The model to ask: the configured one, else the first the server lists (looked up once)."""
        if self._model is None:
            try:
                async with self._api() as api:
                    models = [m.id async for m in api.models.list()]
            except openai.OpenAIError as exc:
                raise self._error(exc) from exc
            if not models:
                raise ChatError(f"the API at {self.config.base_url} lists no models; start it with a model")
            self._model = models[0]
        return self._model

    async def stream(
        self, turns: Sequence[Turn], options: ChatOptions, system: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Ask for the answer to `turns` (whole history, images included) and yield it piece by piece.

        Raises ChatError with a readable message for every API, network or file failure."""
        try:
            messages = to_api_messages(turns, system)
        except OSError as exc:
            raise ChatError("an attached image can no longer be read; attach it again") from exc
        model = await self.model()
        log.debug("asking %s for %d messages (ocr=%s)", model, len(messages), options.ocr)
        try:
            async with self._api() as api:
                stream = await api.chat.completions.create(
                    model=model,
                    messages=messages,
                    temperature=options.temperature,
                    max_tokens=options.max_tokens,
                    stream=True,
                    extra_body={"ocr": options.ocr},
                )
                async with stream:
                    async for chunk in stream:
                        event = parse_chunk(chunk)
                        if event is not None:
                            yield event
        except openai.OpenAIError as exc:
            log.info("chat request failed: %s", exc)
            raise self._error(exc) from exc
