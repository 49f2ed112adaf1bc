"""The chat completions use case: check the request, build engine input, run `n` generations, and answer as one
JSON body or as server-sent events ending in [DONE]."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import Request
from fastapi.responses import StreamingResponse

from assistant.errors import AssistantError
from assistant.inference import SamplingParams
from serving.engines.base import Delta, Engine, GenerationRequest
from serving.errors import APIError, InvalidRequest, NotFound
from serving.media import MessageBuilder
from serving.metrics import Metrics
from serving.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    DeltaMessage,
    Usage,
    completion_id,
)
from serving.settings import ServeSettings

log = logging.getLogger(__name__)
_DONE = object()


class ChatService:
    def __init__(
        self, settings: ServeSettings, engine: Engine, builder: MessageBuilder, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.builder = builder
        self.metrics = metrics

    def sampling(self, body: ChatCompletionRequest) -> SamplingParams:
        if body.n > self.settings.max_n:
            raise InvalidRequest(
                f"n is {body.n}, over the limit of {self.settings.max_n}; ask for fewer", param="n"
            )
        stops = body.stop_strings()
        if len(stops) > 4:
            raise InvalidRequest("stop takes at most 4 strings; send fewer", param="stop")
        try:
            return SamplingParams(
                max_new_tokens=body.max_completion_tokens
                or body.max_tokens
                or self.settings.default_max_tokens,
                temperature=0.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p,
                stop=stops,
                seed=body.seed,
                min_tokens=body.min_tokens,
            )
        except AssistantError as exc:
            raise InvalidRequest(str(exc)) from exc

    async def complete(
        self, body: ChatCompletionRequest, request: Request
    ) -> ChatCompletion | StreamingResponse:
        started = time.monotonic()
        if body.model != self.engine.model_name:
            raise NotFound(
                f"model {body.model!r} is not served here; use {self.engine.model_name!r} (see /v1/models)",
                param="model",
                code="model_not_found",
            )
        params = self.sampling(body)
        messages, images, ocr_text = await self.builder.build(body.messages, body.ocr or self.settings.ocr)
        base_id = completion_id()
        streams: list[AsyncIterator[Delta]] = []
        try:
            for i in range(body.n):
                seed = None if params.seed is None else params.seed + i
                generation = GenerationRequest(f"{base_id}-{i}", messages, images, replace(params, seed=seed))
                streams.append(await self.engine.generate(generation))
        except BaseException:
            await _close_all(streams)
            raise
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = self._sse(base_id, streams, include_usage, started, ocr_text)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        return await self._collect(base_id, streams, request, started, ocr_text)

    async def _collect(
        self,
        base_id: str,
        streams: list[AsyncIterator[Delta]],
        request: Request,
        started: float,
        ocr_text: str = "",
    ) -> ChatCompletion:
        texts = [[] for _ in streams]
        finals: list[Delta | None] = [None] * len(streams)

        async def consume() -> None:
            async for index, delta in self._timed(streams, started):
                texts[index].append(delta.text)
                if delta.finish_reason:
                    finals[index] = delta

        async def watch() -> None:  # stop generating if the client goes away
            while not await request.is_disconnected():
                await asyncio.sleep(0.25)

        consumer, watcher = asyncio.create_task(consume()), asyncio.create_task(watch())
        try:
            await asyncio.wait({consumer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not consumer.done():
                consumer.cancel()
                await _close_all(streams)
                log.info("%s: client disconnected, generation cancelled", base_id)
        consumer.result()  # re-raises an engine error
        choices = [
            Choice(
                index=i, message=AssistantMessage(content="".join(texts[i])), finish_reason=f.finish_reason
            )
            for i, f in enumerate(finals)
        ]
        prompt = finals[0].prompt_tokens
        completion = sum(f.completion_tokens for f in finals)
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        self.metrics.request_latency.observe(time.monotonic() - started)
        return ChatCompletion(
            id=base_id, model=self.engine.model_name, choices=choices, usage=usage, ocr_text=ocr_text or None
        )

    async def _sse(
        self,
        base_id: str,
        streams: list[AsyncIterator[Delta]],
        include_usage: bool,
        started: float,
        ocr_text: str = "",
    ) -> AsyncIterator[str]:
        created, model = int(time.time()), self.engine.model_name

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None, ocr: str | None = None) -> str:
            body = ChatCompletionChunk(
                id=base_id, created=created, model=model, choices=choices, usage=usage, ocr_text=ocr
            )
            return f"data: {body.model_dump_json(exclude_none=usage is None)}\n\n"

        prompt, completion = 0, 0
        try:
            for i in range(len(streams)):  # the first chunk carries the OCR text the model was given, if any
                first = ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                yield chunk([first], ocr=(ocr_text or None) if i == 0 else None)
            async for index, delta in self._timed(streams, started):
                if delta.text:
                    yield chunk([ChunkChoice(index=index, delta=DeltaMessage(content=delta.text))])
                if delta.finish_reason:
                    prompt, completion = delta.prompt_tokens, completion + delta.completion_tokens
                    finish = ChunkChoice(index=index, delta=DeltaMessage(), finish_reason=delta.finish_reason)
                    yield chunk([finish])
            if include_usage:
                yield chunk(
                    [],
                    Usage(
                        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
                    ),
                )
            self.metrics.request_latency.observe(time.monotonic() - started)
        except APIError as exc:  # headers are gone already: report in the stream, then end it
            self.metrics.errors.labels(str(exc.status), exc.code or exc.type).inc()
            yield f"data: {json.dumps(exc.body())}\n\n"
        finally:
            await _close_all(streams)
        yield "data: [DONE]\n\n"

    async def _timed(
        self, streams: list[AsyncIterator[Delta]], started: float
    ) -> AsyncIterator[tuple[int, Delta]]:
        """Merge the streams, recording time to first token and the gaps between deltas."""
        last: float | None = None
        async for index, delta in _merge(streams):
            now = time.monotonic()
            if delta.text:
                if last is None:
                    self.metrics.time_to_first_token.observe(now - started)
                else:
                    self.metrics.inter_token_latency.observe(now - last)
                last = now
            yield index, delta


async def _merge(streams: list[AsyncIterator[Delta]]) -> AsyncIterator[tuple[int, Delta]]:
    """Interleave several delta streams, tagging each delta with its stream's index."""
    if len(streams) == 1:
        async for delta in streams[0]:
            yield 0, delta
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Delta]) -> None:
        try:
            async for delta in stream:
                await queue.put((index, delta))
        except Exception as exc:
            await queue.put((index, exc))
        finally:
            await queue.put((index, _DONE))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()


async def _close_all(streams: list[AsyncIterator[Delta]]) -> None:
    for stream in streams:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
