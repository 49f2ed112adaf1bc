"""In-process engine over transformers: a scheduler thread gathers waiting requests into a batch and decodes
them together, one token per step, with a shared KV cache (left padding, per-row positions, per-request
sampling, stop strings, max tokens and cancellation). Finished rows leave the cache at once; requests that
arrive mid-batch wait for the next batch."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from assistant.cli import resolve_model
from assistant.inference import Assistant, normalize_messages
from serving.engines.base import Delta, GenerationRequest
from serving.engines.decoding import TextTracker, collate, make_generator, sample_row
from serving.errors import ContextLengthExceeded, EngineUnavailable, Overloaded

if TYPE_CHECKING:
    from serving.metrics import Metrics
    from serving.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass
class _Job:
    request: GenerationRequest
    inputs: dict[str, torch.Tensor]
    prompt_tokens: int
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: bool = False

    def __post_init__(self) -> None:
        self.tracker = TextTracker(self.request.params.stop)
        self.generator = make_generator(self.request.params)
        self.count = 0

    def send(self, item: Delta | Exception) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled.set()

    def finish(self, text: str, reason: str) -> None:
        self.done = True
        self.send(Delta(text, self.prompt_tokens, self.count, reason))

    def step(self, token: int, eos_id: int | None, decode) -> bool:
        """Take one generated token; True while the request wants more."""
        self.count += 1
        if token == eos_id:
            self.finish(self.tracker.flush(decode), "stop")
            return False
        text = self.tracker.push(token, decode)
        if self.tracker.stopped:
            self.finish(text, "stop")
            return False
        if self.count >= self.max_tokens:
            self.finish(text + self.tracker.flush(decode), "length")
            return False
        if text:
            self.send(Delta(text, self.prompt_tokens, self.count))
        return True


class _JobStream:
    """The async iterator a caller reads; closing it (or dropping out of the loop) cancels the request.

    Deltas that queued up while the caller was busy (writing the last chunk to a slow client, say) come out
    as one, as vLLM's stream interval does: the reader never falls behind the engine one token at a time."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self._held: Exception | None = None  # an error met while coalescing, raised on the next call

    def __aiter__(self) -> _JobStream:
        return self

    async def __anext__(self) -> Delta:
        item: Delta | Exception
        if self._held is not None:
            item, self._held = self._held, None
        elif self.job.cancelled.is_set() and self.job.out.empty():
            raise StopAsyncIteration
        else:
            item = await self.job.out.get()
        while isinstance(item, Delta) and item.finish_reason is None and not self.job.out.empty():
            following = self.job.out.get_nowait()
            if isinstance(following, Exception):
                self._held = following
                break
            item = replace(following, text=item.text + following.text)
        if isinstance(item, Exception):
            self.job.cancelled.set()
            raise item
        if item.finish_reason is not None:
            self.job.cancelled.set()  # nothing more will come; the next call ends the iteration
        return item

    async def aclose(self) -> None:
        self.job.cancelled.set()


class TransformersEngine:
    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model_name = settings.model_name
        self.source = resolve_model(settings.model)  # a missing embedded model is reported before start-up
        self.assistant: Assistant | None = None
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = 0

    async def start(self) -> None:
        source = self.source
        self.assistant = await asyncio.to_thread(
            Assistant.load, source, device=self.settings.device, dtype=self.settings.dtype
        )
        self._thread = threading.Thread(target=self._loop, name="transformers-engine", daemon=True)
        self._thread.start()
        log.info("transformers engine ready: %s on %s", source, self.assistant.device)

    async def stop(self, drain_timeout_s: float) -> None:
        """Finish the running and queued requests (up to `drain_timeout_s`), then stop the scheduler."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, drain_timeout_s)
        while not self._queue.empty():
            self._queue.get_nowait().send(
                EngineUnavailable("the server is shutting down; retry on another one")
            )

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def load(self) -> tuple[int, int]:
        return self._running, self._queue.qsize()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if not self.healthy():
            raise EngineUnavailable("the engine is not running; retry later or restart the server")
        if self._queue.qsize() >= self.settings.max_waiting:
            raise Overloaded("too many requests are waiting; retry in a moment")
        inputs, prompt_tokens = await asyncio.to_thread(self._prepare, request)
        max_tokens = request.params.max_new_tokens
        context = self.assistant.context_length
        if prompt_tokens + max_tokens > context:
            raise ContextLengthExceeded(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) is over the model's context "
                f"of {context} tokens; shorten the messages or lower max_tokens",
                param="messages",
            )
        job = _Job(request, inputs, prompt_tokens, max_tokens, asyncio.get_running_loop())
        self._queue.put(job)
        self.metrics.prompt_tokens.inc(prompt_tokens)
        return _JobStream(job)

    def _prepare(self, request: GenerationRequest) -> tuple[dict[str, torch.Tensor], int]:
        """Chat template + image processing for one request, on CPU (tokens: (1, L))."""
        processor = self.assistant.processor
        messages, images = normalize_messages(request.messages, request.images)
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=images or None, text=[prompt], return_tensors="pt")
        return dict(inputs), int(inputs["input_ids"].shape[1])

    # --- the scheduler thread -----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._schedule()
        except BaseException:
            log.exception("the engine's scheduler thread died; failing the queued requests")
            raise
        finally:  # whatever ended the loop, nobody will serve the queue any more: answer it, never leave it hanging
            while not self._queue.empty():
                self._queue.get_nowait().send(
                    EngineUnavailable("the engine is not running; retry later or restart the server")
                )

    def _schedule(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            jobs = self._take_batch()
            if not jobs:
                continue
            self._running = len(jobs)
            self.metrics.batch_size.observe(len(jobs))
            try:
                self._run_batch(jobs)
            except Exception:  # a failed batch fails its requests, never the engine
                log.exception("a batch of %d requests failed", len(jobs))
                for job in jobs:
                    if not job.done:
                        job.send(EngineUnavailable("the engine failed on this request; retry it"))
            finally:
                self._running = 0

    def _take_batch(self) -> list[_Job]:
        try:
            jobs = [self._queue.get(timeout=0.05)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while len(jobs) < self.settings.max_batch_size:
            try:
                jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return [job for job in jobs if not job.cancelled.is_set()]

    @torch.inference_mode()
    def _run_batch(self, jobs: list[_Job]) -> None:
        model = self.assistant.model
        tokenizer = self.assistant.tokenizer
        eos_id = tokenizer.eos_token_id

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=True)

        batch = collate([job.inputs for job in jobs], tokenizer.pad_token_id)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        mask, positions = batch["attention_mask"], batch["position_ids"][:, -1:]  # (B, L), (B, 1)
        out = model(**batch, use_cache=True, logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1, :]  # (B, V)
        active = list(jobs)
        while active:
            keep, tokens = [], []
            for row, job in enumerate(active):
                if job.cancelled.is_set():
                    job.done = True
                    continue
                params = job.request.params
                banned = eos_id if job.count < params.min_tokens else None
                token = sample_row(logits[row], params, job.generator, banned)
                if job.step(token, eos_id, decode):
                    keep.append(row)
                    tokens.append(token)
            self.metrics.completion_tokens.inc(len(active))
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows from the cache and the masks
                index = torch.tensor(keep, device=model.device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                active = [active[row] for row in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)  # (B, L + 1)
            positions = positions + 1  # (B, 1)
            step_ids = torch.tensor(tokens, device=model.device)[:, None]  # (B, 1)
            out = model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            )
            cache, logits = out.cache, out.logits[:, -1, :]
