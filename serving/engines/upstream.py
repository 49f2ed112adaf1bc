"""Any OpenAI-compatible server (for example `vllm serve` on the exported model) behind this gateway.

The gateway has already fetched, checked and OCR-hinted the images; it forwards them as PNG data URLs and
always streams from the upstream, so a client that goes away closes the upstream request too. It reads the
upstream's first event before answering, so that what vLLM reports there after its 200 (a full queue, a dead
engine) and a prompt over the context surface as errors before the first byte. vLLM clamps `max_tokens` to
what is left of the context instead of refusing; where the upstream reports its context (`max_model_len` in
vLLM's GET /models), the gateway asks for usage on every chunk and refuses like the in-process engines.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from PIL import Image

from assistant.errors import ConfigError
from serving.engines.base import Delta, GenerationRequest, map_finish_reason
from serving.errors import (
    APIError,
    ContextLengthExceeded,
    GenerationFailed,
    InvalidRequest,
    Overloaded,
    UpstreamFailed,
)

if TYPE_CHECKING:
    from serving.metrics import Metrics
    from serving.settings import ServeSettings

log = logging.getLogger(__name__)
PROBE_INTERVAL_S = 5.0


def to_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def to_openai_messages(messages: list[dict[str, Any]], images: list[Image.Image]) -> list[dict[str, Any]]:
    """Normalized messages (image parts as slots) and their images -> OpenAI chat messages with data URLs."""
    pending = iter(images)
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": to_data_url(next(pending))}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        if all(p["type"] == "text" for p in parts):
            out.append({"role": message["role"], "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": message["role"], "content": parts})
    return out


# vLLM reports a request over the context as a 400 naming one of these parameters (vllm/renderers/params.py).
CONTEXT_PARAMS = {"input_tokens", "input_text", "max_tokens", "max_completion_tokens"}
# Finish reasons an upstream may send -> ours. OpenAI's, and vLLM's "repetition" (its repetition detector).
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "repetition": "stop",
    "tool_calls": "stop",
    "function_call": "stop",
    "content_filter": "stop",
}
# vLLM's finish reasons that are failures, not answers.
FINISH_ERRORS = {
    "abort": lambda: UpstreamFailed(
        "the upstream model stopped this answer (it may be shutting down); retry it"
    ),
    "error": lambda: GenerationFailed("the upstream model failed while generating this answer; retry it"),
}


def upstream_error(status: int, body: bytes) -> APIError:
    """Map an upstream error to ours, keeping only its message (never its internals).

    This server's errors carry a string `code`; vLLM's carry the HTTP status as an int and name the offending
    parameter in `param`."""
    try:
        error = json.loads(body).get("error") or {}
        message, code, param = str(error.get("message", "")), error.get("code"), error.get("param")
    except (ValueError, AttributeError):
        message, code, param = "", None, None
    if status == 400 and (code == "context_length_exceeded" or param in CONTEXT_PARAMS):
        return ContextLengthExceeded(
            message
            or "the prompt plus max_tokens is over the model's context; shorten it or lower max_tokens",
            param="messages",
        )
    if status in (400, 422):
        return InvalidRequest(message or "the upstream model refused the request; check its parameters")
    if status == 429 or (status == 503 and not isinstance(code, str)):  # vLLM: queue full, retry
        return Overloaded("the upstream model is overloaded; retry in a moment")
    if status in (401, 403):
        return UpstreamFailed("the upstream refused this gateway's credentials; check --upstream-api-key")
    return UpstreamFailed(f"the upstream model answered HTTP {status}; retry later")


def event_error(event: dict[str, Any]) -> APIError:
    """An error sent as a server-sent event (after the upstream's 200): vLLM's `code` is the HTTP status."""
    code = (event.get("error") or {}).get("code") if isinstance(event.get("error"), dict) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 502
    return upstream_error(status, json.dumps(event).encode())


def finish_reason(reason: str | None) -> str | None:
    """The upstream's finish reason -> ours ("stop" or "length"); raises for vLLM's "abort" and "error"."""
    return map_finish_reason(reason, FINISH_REASONS, FINISH_ERRORS, "the upstream")


class _UpstreamStream:
    """Deltas parsed from the upstream's server-sent events; `aclose()` drops the upstream connection."""

    def __init__(self, response: httpx.Response, engine: UpstreamEngine, max_tokens: int) -> None:
        self.response = response
        self.engine = engine
        self.max_tokens = max_tokens
        self.closed = False
        engine._running += 1
        self._raw = self._read()
        self._first: dict[str, Any] | None = None
        self._events = self._parse()

    async def begin(self) -> None:
        """Read the first event before any byte reaches the client: an error in it, or a prompt that with
        max_tokens is over the upstream's context (from its usage), raises here and closes the request."""
        try:
            self._first = await self._raw.__anext__()
            usage = self._first.get("usage") or {}
            context = self.engine.context_length
            prompt = int(usage.get("prompt_tokens") or 0)
            if context and prompt and prompt + self.max_tokens > context:
                raise ContextLengthExceeded(
                    f"the prompt ({prompt} tokens) plus max_tokens ({self.max_tokens}) is over the model's "
                    f"context of {context} tokens; shorten the messages or lower max_tokens",
                    param="messages",
                )
        except StopAsyncIteration:
            self._first = {}
        except BaseException:
            await self.aclose()
            raise

    def __aiter__(self) -> _UpstreamStream:
        return self

    async def __anext__(self) -> Delta:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine._running -= 1
        await self._events.aclose()
        await self._raw.aclose()
        await self.response.aclose()

    async def _read(self) -> AsyncIterator[dict[str, Any]]:
        """The upstream's events as dicts, up to [DONE]; an error event raises our error."""
        try:
            async for line in self.response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise event_error(event)
                yield event
        except httpx.HTTPError as exc:
            raise UpstreamFailed("the upstream model dropped the connection; retry") from exc
        except ValueError as exc:
            raise UpstreamFailed(
                "the upstream model sent an event that is not JSON; check --upstream-url"
            ) from exc
        finally:
            await self.response.aclose()

    async def _parse(self) -> AsyncIterator[Delta]:
        prompt, count, finish = 0, 0, None
        first = self._first if self._first is not None else {}
        events = self._raw
        pending = [first] if first else []
        while True:
            if pending:
                event = pending.pop()
            else:
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    break
            usage = event.get("usage") or {}
            if usage:
                prompt = int(usage.get("prompt_tokens") or prompt)
                count = int(usage.get("completion_tokens") or count)
            for choice in event.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    count = count if usage else count + 1
                    yield Delta(text, prompt, count)
                finish = choice.get("finish_reason") or finish
        if not self.closed:
            self.closed = True
            self.engine._running -= 1
        if finish is None:
            raise UpstreamFailed("the upstream model ended the answer without a finish reason; retry")
        yield Delta("", prompt, count, finish_reason(finish))


class UpstreamEngine:
    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model_name = settings.model_name
        self.upstream_model = settings.model
        headers = (
            {"Authorization": f"Bearer {settings.upstream_api_key}"} if settings.upstream_api_key else {}
        )
        self.client = httpx.AsyncClient(
            base_url=settings.upstream_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.upstream_timeout_s, connect=10.0),
            trust_env=False,
        )
        self.context_length = settings.max_model_len or 0  # else what the upstream's GET /models reports
        self._alive = False
        self._stopping = False
        self._running = 0
        self._probe: asyncio.Task | None = None

    async def start(self) -> None:
        try:
            response = await self.client.get("models", timeout=10.0)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"the upstream at {self.settings.upstream_url} does not answer; start it first or fix --upstream-url"
            ) from exc
        if response.status_code in (401, 403):
            raise ConfigError("the upstream refused this gateway's API key; check --upstream-api-key")
        cards = self._model_cards(response)
        if cards is None:
            raise ConfigError(
                f"the upstream at {self.settings.upstream_url} has no OpenAI GET /models; check the URL"
            )
        if self.upstream_model is None:
            if not cards:
                raise ConfigError("the upstream serves no model; pass --model with the upstream's model id")
            self.upstream_model = cards[0]["id"]
        if not self.settings.served_model_name and not self.settings.model:
            self.model_name = self.upstream_model
        card = next((c for c in cards if c["id"] == self.upstream_model), {})
        if not self.context_length and isinstance(card.get("max_model_len"), int):
            self.context_length = card["max_model_len"]  # vLLM's model card carries its context
        self._alive = True
        self._probe = asyncio.create_task(self._watch())
        log.info(
            "forwarding %r to %s as %r (context %s)",
            self.model_name,
            self.settings.upstream_url,
            self.upstream_model,
            self.context_length or "not reported",
        )

    @staticmethod
    def _model_cards(response: httpx.Response) -> list[dict[str, Any]] | None:
        try:
            response.raise_for_status()
            cards = [dict(m) for m in response.json().get("data", [])]
            return cards if all(isinstance(c.get("id"), str) for c in cards) else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            return None

    async def _models(self) -> list[dict[str, Any]] | None:
        try:
            return self._model_cards(await self.client.get("models", timeout=5.0))
        except httpx.HTTPError:
            return None

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(PROBE_INTERVAL_S)
            self._alive = await self._models() is not None

    async def stop(self, drain_timeout_s: float) -> None:
        self._stopping = True
        if self._probe is not None:
            self._probe.cancel()
        deadline = asyncio.get_running_loop().time() + drain_timeout_s
        while self._running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        await self.client.aclose()

    def healthy(self) -> bool:
        return self._alive and not self._stopping

    def load(self) -> tuple[int, int]:
        return self._running, 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        params = request.params
        payload: dict[str, Any] = {
            "model": self.upstream_model,
            "messages": await asyncio.to_thread(to_openai_messages, request.messages, request.images),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            # usage on every chunk (vLLM's extra) where the context is known: the first one checks the prompt
            "stream_options": {"include_usage": True}
            | ({"continuous_usage_stats": True} if self.context_length else {}),
            "ocr": "off",  # hints were added here already; another instance of this server must not add more
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        if params.min_tokens:
            payload["min_tokens"] = params.min_tokens  # vLLM's extra, and this server's
        try:
            response = await self.client.send(
                self.client.build_request("POST", "chat/completions", json=payload), stream=True
            )
        except httpx.HTTPError as exc:
            raise UpstreamFailed("the upstream model is unreachable; retry later") from exc
        if response.status_code != 200:
            body = await response.aread()
            await response.aclose()
            raise upstream_error(response.status_code, body)
        stream = _UpstreamStream(response, self, params.max_new_tokens)
        await stream.begin()
        return stream
