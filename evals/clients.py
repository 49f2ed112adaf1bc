"""Who answers: any OpenAI-compatible endpoint (`OpenAIClient`) or a model loaded in-process
(`InProcessClient`). Both have one method, `answer(messages, images, max_tokens) -> str`; the in-process one also
answers a batch in one forward pass (`answer_batch`).

Messages use the chat shape of `assistant.inference`: `{"type": "image"}` parts take the given
images in order. Decoding is greedy (temperature 0) so that runs are repeatable.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import openai

from assistant.errors import AssistantError

log = logging.getLogger(__name__)


class EvalError(AssistantError):
    """An evaluation could not run (endpoint unreachable, dataset unreadable, cache mismatch)."""


class AnswerError(Exception):
    """One question could not be answered (the endpoint refused it); the run goes on and reports it."""


class AnswerClient(Protocol):
    name: str

    def answer(self, messages: list[dict[str, Any]], images: list[str | Path], max_tokens: int) -> str: ...


@runtime_checkable
class BatchAnswerClient(AnswerClient, Protocol):
    """A client that also answers several questions in one call (the in-process one: one forward pass)."""

    def answer_batch(
        self, conversations: list[tuple[list[dict[str, Any]], list[str | Path]]], max_tokens: int
    ) -> list[str | AnswerError]: ...


def data_url(path: str | Path) -> str:
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def to_openai_messages(messages: list[dict[str, Any]], images: list[str | Path]) -> list[dict[str, Any]]:
    """Replace `{"type": "image"}` parts by `image_url` parts carrying the images as data URLs."""
    pending = list(images)
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    if not pending:
                        raise ValueError("more image parts than images; give one image per image part")
                    parts.append({"type": "image_url", "image_url": {"url": data_url(pending.pop(0))}})
                else:
                    parts.append(part)
            content = parts
        out.append({"role": m["role"], "content": content})
    if pending:
        raise ValueError(f"{len(pending)} image(s) left over; give one image per image part")
    return out


def endpoint_model(base_url: str, api_key: str = "EMPTY", timeout: float = 30.0) -> str:
    """The one model an endpoint serves (`GET /models`); an error that lists them when it serves several."""
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=timeout)
    try:
        names = [m.id for m in client.models.list()]
    except openai.APIConnectionError as exc:
        raise EvalError(f"could not reach {base_url}; start the server or check --base-url") from exc
    except openai.AuthenticationError as exc:
        raise EvalError(f"{base_url} refused the API key; pass the right --api-key") from exc
    except openai.APIStatusError as exc:
        raise EvalError(
            f"{base_url} did not list its models (HTTP {exc.status_code}); name one with --model"
        ) from exc
    if len(names) == 1:
        return names[0]
    if not names:
        raise EvalError(f"{base_url} lists no models; name one with --model")
    raise EvalError(f"{base_url} serves {len(names)} models ({', '.join(names)}); choose one with --model")


class OpenAIClient:
    """Chat completions from any OpenAI-compatible server. Retries (429, 5xx, connection errors)
    are the `openai` client's own, with exponential backoff and `Retry-After` honoured."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        max_retries: int = 4,
        timeout: float = 120.0,
        ocr: str = "off",
    ) -> None:
        self.name = model if ocr == "off" else f"{model}+ocr={ocr}"
        self.model = model
        self.ocr = ocr
        self.base_url = base_url
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout
        )

    def answer(self, messages: list[dict[str, Any]], images: list[str | Path], max_tokens: int) -> str:
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=to_openai_messages(messages, images),
                max_tokens=max_tokens,
                temperature=0.0,
                extra_body={"ocr": self.ocr} if self.ocr != "off" else None,
            )
        except openai.APIConnectionError as exc:
            raise EvalError(
                f"could not reach {self.base_url} after retries; start the server or check --base-url"
            ) from exc
        except openai.AuthenticationError as exc:
            raise EvalError(f"{self.base_url} refused the API key; pass the right --api-key") from exc
        except openai.NotFoundError as exc:
            raise EvalError(
                f"{self.base_url} has no chat completions for model {self.model!r}; check --base-url and --model"
            ) from exc
        except openai.APIStatusError as exc:
            raise AnswerError(f"HTTP {exc.status_code}") from exc
        if not reply.choices:
            raise AnswerError("the reply has no choices")
        return reply.choices[0].message.content or ""


class InProcessClient:
    """A model directory loaded with `assistant.inference.Assistant`, answering in this process."""

    def __init__(self, assistant: Any, ocr: str = "off") -> None:  # an assistant.inference.Assistant
        self.assistant = assistant
        self.ocr = ocr
        self.name = assistant.name if ocr == "off" else f"{assistant.name}+ocr={ocr}"
        self._reader: Any = None

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", ocr: str = "off") -> InProcessClient:
        from assistant.inference import Assistant

        return cls(Assistant.load(model_dir, device=device), ocr=ocr)

    def _with_hints(self, messages: list[dict[str, Any]], images: list[str | Path]) -> list[dict[str, Any]]:
        """The service's OCR hint in each user turn that carries images (same reader, text and placement)."""
        from PIL import Image

        from assistant.ocr import OCRReader, format_hint, insert_hint

        if self._reader is None:
            self._reader = OCRReader()
        pending, out = list(images), []
        for m in messages:
            parts = (
                m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            )
            hints = []
            for part in parts:
                if part.get("type") == "image" and pending:
                    with Image.open(pending.pop(0)) as im:
                        image = im.convert("RGB")
                    if self.ocr == "on" or self._reader.has_text(image):
                        hints.append(format_hint(self._reader.read(image)))
            hint = "\n".join(h for h in hints if h)
            out.append({**m, "content": insert_hint(parts, hint)} if hint else m)
        return out

    def answer(self, messages: list[dict[str, Any]], images: list[str | Path], max_tokens: int) -> str:
        from assistant.errors import InputError

        if self.ocr != "off" and images:
            messages = self._with_hints(messages, images)
        try:
            return self.assistant.chat(messages, images=list(images), max_new_tokens=max_tokens).text
        except InputError as exc:
            raise AnswerError(str(exc)) from exc

    def answer_batch(
        self, conversations: list[tuple[list[dict[str, Any]], list[str | Path]]], max_tokens: int
    ) -> list[str | AnswerError]:
        """`answer` for each conversation, in one left-padded `generate`. A batch the model refuses (a prompt over
        its context) is split in halves until the refused prompts stand alone, so that only they fail and the rest
        still go in batches."""
        if self.ocr != "off":
            conversations = [(self._with_hints(m, i) if i else m, i) for m, i in conversations]
        return self._ask([(m, list(i)) for m, i in conversations], max_tokens)

    def _ask(
        self, conversations: list[tuple[list[dict[str, Any]], list[str | Path]]], max_tokens: int
    ) -> list[str | AnswerError]:
        from assistant.errors import InputError

        try:
            return [r.text for r in self.assistant.chat_batch(conversations, max_new_tokens=max_tokens)]
        except InputError as exc:
            if len(conversations) == 1:
                return [AnswerError(str(exc))]
            half = len(conversations) // 2
            return self._ask(conversations[:half], max_tokens) + self._ask(conversations[half:], max_tokens)
