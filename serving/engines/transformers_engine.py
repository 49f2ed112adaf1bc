"""In-process engine over transformers: a scheduler thread gathers waiting requests into a batch and decodes
them together, one token per step, with a shared KV cache (left padding, per-row positions, per-request
sampling, stop strings, max tokens and cancellation). Finished rows leave the cache at once, and requests
that arrive mid-batch join it at the next step (continuous batching): they are prefilled together, then
their caches are left-padded to the batch's length and concatenated to it."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

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


@dataclass
class _Decoding:
    """The running batch: its jobs, their shared KV cache, attention mask (B, L), positions of the last token
    (B, 1) and the tokens to feed next (one per job)."""

    jobs: list[_Job]
    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    tokens: list[int]
    engine: TransformersEngine

    def advance(self, logits: torch.Tensor) -> None:
        """Sample each job's next token from `logits` (B, V); drop the jobs that finished or were cancelled."""
        eos_id = self.engine.assistant.tokenizer.eos_token_id
        keep, tokens = [], []
        for row, job in enumerate(self.jobs):
            if job.cancelled.is_set():
                job.done = True
                continue
            params = job.request.params
            banned = eos_id if job.count < params.min_tokens else None
            token = sample_row(logits[row], params, job.generator, banned)
            if job.step(token, eos_id, self.engine._decode):
                keep.append(row)
                tokens.append(token)
        self.engine.metrics.completion_tokens.inc(len(self.jobs))
        if len(keep) < len(self.jobs):  # drop finished rows from the cache and the masks
            index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask, self.positions = self.mask[index], self.positions[index]
            self.jobs = [self.jobs[row] for row in keep]
        self.tokens = tokens
        # the fed tokens' slots: one more attended position per row, positions one further
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.jobs), 1))], dim=1)  # (B, L + 1)
        self.positions = self.positions + 1

    def can_join(self) -> bool:
        """Only plain full-attention cache layers are padded and joined."""
        layers = getattr(self.cache, "layers", None)
        return layers is not None and all(type(layer) is DynamicLayer for layer in layers)

    def join(self, other: _Decoding) -> _Decoding:
        """One batch of both: caches and masks left-padded to the longer length, then stacked."""
        if not other.jobs:
            return self
        if not self.jobs:
            return other
        length = max(self.mask.shape[1], other.mask.shape[1])
        # zeros on the left: the cache (B, H, L - 1, D) holds one slot fewer than the mask (B, L), since the
        # token fed next is not in it yet; a zero in the mask hides the padded slots
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys, mine.values = (
                torch.cat([F.pad(x, (0, 0, length - 1 - x.shape[2], 0)) for x in pair])
                for pair in ((mine.keys, theirs.keys), (mine.values, theirs.values))
            )
        self.mask = torch.cat([F.pad(m, (length - m.shape[1], 0)) for m in (self.mask, other.mask)])
        self.positions = torch.cat([self.positions, other.positions])
        self.jobs += other.jobs
        self.tokens += other.tokens
        return self


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

    def _take_joiners(self, room: int) -> list[_Job]:
        """Requests waiting now (no wait), at most `room` of them, for the running batch."""
        jobs: list[_Job] = []
        while len(jobs) < room:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if not job.cancelled.is_set():
                jobs.append(job)
        return jobs

    @torch.inference_mode()
    def _run_batch(self, jobs: list[_Job]) -> None:
        model = self.assistant.model
        state = self._prefill(jobs)
        while state.jobs:
            joiners = self._take_joiners(self.settings.max_batch_size - len(state.jobs))
            if joiners:
                if state.can_join():
                    self.metrics.batch_size.observe(len(joiners))
                    state = state.join(self._prefill(joiners))
                else:  # a cache this engine cannot pad (sliding windows): they go first in the next batch
                    for job in joiners:
                        self._queue.put(job)
            self._running = len(state.jobs)
            out = model(
                input_ids=torch.tensor(state.tokens, device=model.device)[:, None],  # (B, 1)
                attention_mask=state.mask,
                position_ids=state.positions,
                cache=state.cache,
                use_cache=True,
            )
            state.cache = out.cache
            state.advance(out.logits[:, -1, :])
            self._running = len(state.jobs)

    def _prefill(self, jobs: list[_Job]) -> _Decoding:
        """Run the prompts of `jobs` together and take each one's first token."""
        model, tokenizer = self.assistant.model, self.assistant.tokenizer
        batch = collate([job.inputs for job in jobs], tokenizer.pad_token_id)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        out = model(**batch, use_cache=True, logits_to_keep=1)
        state = _Decoding(
            jobs=list(jobs),
            cache=out.cache,
            mask=batch["attention_mask"],  # (B, L)
            positions=batch["position_ids"][:, -1:],  # (B, 1)
            tokens=[],
            engine=self,
        )
        state.advance(out.logits[:, -1, :])
        return state

    def _decode(self, ids: list[int]) -> str:
        return self.assistant.tokenizer.decode(ids, skip_special_tokens=True)
