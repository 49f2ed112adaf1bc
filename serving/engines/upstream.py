"""Any OpenAI-compatible server (for example `vllm serve` on the exported model) behind this gateway.

The gateway has already fetched, checked and OCR-hinted the images; it forwards them as PNG data URLs and
always streams from the upstream, so a client that goes away closes the upstream request too.
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
from serving.engines.base import Delta, GenerationRequest
from serving.errors import APIError, ContextLengthExceeded, InvalidRequest, Overloaded, UpstreamFailed

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


def upstream_error(status: int, body: bytes) -> APIError:
    """Map an upstream error to ours, keeping only its message and code (never its internals)."""
    try:
        error = json.loads(body).get("error") or {}
        message, code = str(error.get("message", "")), error.get("code")
    except (ValueError, AttributeError):
        message, code = "", None
    if status == 400 and code == "context_length_exceeded":
        return ContextLengthExceeded(message or "the prompt is too long for the model", param="messages")
    if status in (400, 422):
        return InvalidRequest(message or "the upstream model refused the request; check its parameters")
    if status == 429:
        return Overloaded("the upstream model is overloaded; retry in a moment")
    if status in (401, 403):
        return UpstreamFailed("the upstream refused this gateway's credentials; check --upstream-api-key")
    return UpstreamFailed(f"the upstream model answered HTTP {status}; retry later")


class _UpstreamStream:
    """Deltas parsed from the upstream's server-sent events; `aclose()` drops the upstream connection."""

    def __init__(self, response: httpx.Response, engine: UpstreamEngine) -> None:
        self.response = response
        self.engine = engine
        self.closed = False
        engine._running += 1
        self._events = self._parse()

    def __aiter__(self) -> _UpstreamStream:
        return self

    async def __anext__(self) -> Delta:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine._running -= 1
        await self._events.aclose()
        await self.response.aclose()

    async def _parse(self) -> AsyncIterator[Delta]:
        prompt, count, finish = 0, 0, None
        try:
            async for line in self.response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise upstream_error(502, data.encode())
                if event.get("usage"):
                    prompt = int(event["usage"].get("prompt_tokens", 0))
                    count = int(event["usage"].get("completion_tokens", count))
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        count += 1
                        yield Delta(text, prompt, count)
                    finish = choice.get("finish_reason") or finish
        except httpx.HTTPError as exc:
            raise UpstreamFailed("the upstream model dropped the connection; retry") from exc
        finally:
            await self.response.aclose()
        if not self.closed:
            self.closed = True
            self.engine._running -= 1
        yield Delta("", prompt, count, "length" if finish == "length" else "stop")


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
        models = self._model_ids(response)
        if models is None:
            raise ConfigError(
                f"the upstream at {self.settings.upstream_url} has no OpenAI GET /models; check the URL"
            )
        if self.upstream_model is None:
            if not models:
                raise ConfigError("the upstream serves no model; pass --model with the upstream's model id")
            self.upstream_model = models[0]
        if not self.settings.served_model_name and not self.settings.model:
            self.model_name = self.upstream_model
        self._alive = True
        self._probe = asyncio.create_task(self._watch())
        log.info(
            "forwarding %r to %s as %r", self.model_name, self.settings.upstream_url, self.upstream_model
        )

    @staticmethod
    def _model_ids(response: httpx.Response) -> list[str] | None:
        try:
            response.raise_for_status()
            return [m["id"] for m in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            return None

    async def _models(self) -> list[str] | None:
        try:
            return self._model_ids(await self.client.get("models", timeout=5.0))
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
            "stream_options": {"include_usage": True},
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
        return _UpstreamStream(response, self)
