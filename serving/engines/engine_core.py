"""The transformers engine's core, in a process of its own: it loads the model, gathers the requests its parent
(`TransformersEngine`, in the API server's process) sends into batches and decodes them together, one token per
step, with a shared KV cache (left padding, per-row positions, per-request sampling, stop strings, max tokens and
cancellation), and sends back each step's text deltas in one message. Finished rows leave the cache at once, and
requests that arrive mid-batch join it at the next step (continuous batching): they are prefilled together, then
their caches are left-padded to the batch's length and concatenated to it.

Why a process: a small model's forward pass is mostly Python, and so is the HTTP work of streaming its tokens;
in one process they take turns on one GIL and each slows the other. vLLM splits its engine core from its API
server for the same reason.

    python -m serving.engines.engine_core --fd N     # started by TransformersEngine over a socket pair

Messages (pickled by `multiprocessing.connection`, arrays as numpy):
    parent -> core: ("start", CoreConfig) once, then ("add", id, inputs, max_tokens, params), ("cancel", id),
                    ("stop",): finish what is running and queued, then exit
    core -> parent: ("ready", {"device", "context_length", "threads"}) or ("failed", message), then ("step", Step)...
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

from assistant.errors import AssistantError
from assistant.inference import Assistant, SamplingParams, collate
from assistant.qformer import step_model
from assistant.threads import apply_threads
from serving.engines.decoding import TextTracker, make_generator, sample_row

log = logging.getLogger("serving.engine_core")


@dataclass(frozen=True)
class CoreConfig:
    model: str
    device: str = "auto"
    dtype: str | None = None
    max_batch_size: int = 8
    batch_wait_ms: float = 0.0
    threads: int = 0  # torch threads; 0: assistant.threads' rule
    log_level: int = logging.INFO


class Step(NamedTuple):
    """What one scheduler step produced, sent as one message: text deltas (id, text, tokens so far, finish
    reason or None), failed requests (id, message), tokens generated, sizes of batches started or joined, the
    requests running and waiting after it (cancelled ones count until the step that drops them), and how many
    requests the core has received in all (the parent counts the rest as on their way)."""

    deltas: list[tuple[int, str, int, str | None]]
    errors: list[tuple[int, str]]
    tokens: int
    batches: list[int]
    running: int
    waiting: int
    received: int


@dataclass
class _Job:
    id: int
    inputs: dict[str, torch.Tensor]
    max_tokens: int
    params: SamplingParams
    core: EngineCore
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: bool = False

    def __post_init__(self) -> None:
        self.tracker = TextTracker(self.params.stop)
        self.generator = make_generator(self.params)
        self.count = 0

    def finish(self, text: str, reason: str) -> None:
        self.done = True
        self.core.emit(self, text, reason)

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
            self.core.emit(self, text)
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
    core: EngineCore

    def advance(self, logits: torch.Tensor) -> None:
        """Sample each job's next token from `logits` (B, V); drop the jobs that finished or were cancelled."""
        eos_id = self.core.assistant.tokenizer.eos_token_id
        keep, tokens = [], []
        for row, job in enumerate(self.jobs):
            if job.cancelled.is_set():
                job.done = True
                self.core.forget(job)
                continue
            params = job.params
            banned = eos_id if job.count < params.min_tokens else None
            token = sample_row(logits[row], params, job.generator, banned)
            if job.step(token, eos_id, self.core.decode):
                keep.append(row)
                tokens.append(token)
        self.core.outbox_tokens += len(self.jobs)
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


class EngineCore:
    """The scheduler (this process's main thread) and the receiver of the parent's messages (a thread)."""

    def __init__(self, assistant: Assistant, conn: Connection, config: CoreConfig) -> None:
        self.assistant = assistant
        self.conn = conn
        self.config = config
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._jobs: dict[int, _Job] = {}  # admitted and not yet finished, for "cancel"
        self._stopping = threading.Event()
        self._running = 0
        self._deltas: list[tuple[int, str, int, str | None]] = []
        self._errors: list[tuple[int, str]] = []
        self._batches: list[int] = []
        self.outbox_tokens = 0
        self._received = 0
        self._active: list[_Job] = []  # the running batch's jobs and joiners: what a failed batch fails
        self._send_lock = threading.Lock()  # the scheduler's steps and the receiver's refusals

    # --- messages ----------------------------------------------------------------------------------------

    def receive(self) -> None:
        """Until the parent goes away: admit requests, flag cancellations, note the stop."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the parent is gone: nobody reads answers any more
                self._stopping.set()
                for job in list(self._jobs.values()):
                    job.cancelled.set()
                return
            except Exception:  # a message this core cannot read (a version skew?): log it, keep serving
                log.exception("the engine core could not read a message from the server")
                continue
            try:
                self._take(message)
            except Exception:
                log.exception("the engine core could not take a %r message", message[0])
                if message[0] == "add":  # answer the request, or it would wait for ever
                    refusal = (message[1], "the engine could not take this request")
                    self._send(Step([], [refusal], 0, [], self._running, self._queue.qsize(), self._received))

    def _take(self, message: tuple) -> None:
        kind = message[0]
        if kind == "add":
            _, job_id, arrays, max_tokens, params = message
            self._received += 1
            inputs = {name: torch.from_numpy(array) for name, array in arrays.items()}
            job = _Job(job_id, inputs, max_tokens, params, self)
            self._jobs[job_id] = job
            self._queue.put(job)
        elif kind == "cancel":
            job = self._jobs.get(message[1])
            if job is not None:
                job.cancelled.set()
        elif kind == "stop":
            self._stopping.set()

    def emit(self, job: _Job, text: str, reason: str | None = None) -> None:
        self._deltas.append((job.id, text, job.count, reason))
        if reason is not None:
            self.forget(job)

    def fail(self, job: _Job, message: str) -> None:
        job.done = True
        self._errors.append((job.id, message))
        self.forget(job)

    def forget(self, job: _Job) -> None:
        self._jobs.pop(job.id, None)

    def flush(self) -> None:
        """Send what the last step produced, as one message."""
        step = Step(
            self._deltas,
            self._errors,
            self.outbox_tokens,
            self._batches,
            self._running,
            self._queue.qsize(),
            self._received,
        )
        self._deltas, self._errors, self._batches, self.outbox_tokens = [], [], [], 0
        self._send(step)

    def _send(self, step: Step) -> None:
        try:
            with self._send_lock:
                self.conn.send(("step", step))
        except OSError:  # the parent is gone
            self._stopping.set()

    def decode(self, ids: list[int]) -> str:
        return self.assistant.tokenizer.decode(ids, skip_special_tokens=True)

    # --- the scheduler -----------------------------------------------------------------------------------

    def schedule(self) -> None:
        """Run batches until told to stop and nothing is left."""
        while not (self._stopping.is_set() and self._queue.empty()):
            taken = self._take_batch()
            if not taken:
                continue
            jobs = self._live(taken)
            if not jobs:  # all of them were cancelled while they waited
                self.flush()
                continue
            self._running = len(jobs)
            self._batches.append(len(jobs))
            self._active = list(jobs)
            try:
                self._run_batch(jobs)
            except Exception:  # a failed batch fails its requests (joiners too), never the engine
                log.exception("a batch of %d requests failed", len(self._active))
                for job in self._active:
                    if not job.done:
                        self.fail(job, "the engine failed on this request; retry it")
            finally:
                self._active = []
                self._running = 0
                self.flush()

    def _take_batch(self) -> list[_Job]:
        try:
            jobs = [self._queue.get(timeout=0.05)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.config.batch_wait_ms / 1000
        while len(jobs) < self.config.max_batch_size:
            try:
                jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return jobs

    def _take_joiners(self, room: int) -> list[_Job]:
        """Requests waiting now (no wait), at most `room` of them, for the running batch."""
        jobs: list[_Job] = []
        while len(jobs) < room:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return self._live(jobs)

    def _live(self, jobs: list[_Job]) -> list[_Job]:
        """The jobs not cancelled while they waited (those are forgotten)."""
        for job in jobs:
            if job.cancelled.is_set():
                self.forget(job)
        return [job for job in jobs if not job.cancelled.is_set()]

    @torch.inference_mode()
    def _run_batch(self, jobs: list[_Job]) -> None:
        model = self.assistant.model
        state = self._prefill(jobs)
        self._running = len(state.jobs)
        self.flush()
        while state.jobs:
            joiners = self._take_joiners(self.config.max_batch_size - len(state.jobs))
            if joiners:
                if state.can_join():
                    self._batches.append(len(joiners))
                    self._active += joiners
                    state = state.join(self._prefill(joiners))
                    self.flush()  # the joiners' first tokens, before the next step
                else:  # a cache this engine cannot pad (sliding windows): they wait for the next batch
                    for job in joiners:
                        self._queue.put(job)
            self._running = len(state.jobs)
            logits, state.cache = _forward(
                model,
                input_ids=torch.tensor(state.tokens, device=model.device)[:, None],  # (B, 1)
                attention_mask=state.mask,
                position_ids=state.positions,
                cache=state.cache,
                use_cache=True,
            )
            state.advance(logits[:, -1, :])
            self._running = len(state.jobs)
            self.flush()

    def _prefill(self, jobs: list[_Job]) -> _Decoding:
        """Run the prompts of `jobs` together and take each one's first token."""
        model, tokenizer = self.assistant.model, self.assistant.tokenizer
        batch = collate([job.inputs for job in jobs], tokenizer.pad_token_id)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        logits, cache = _forward(model, **batch, use_cache=True, logits_to_keep=1)
        state = _Decoding(
            jobs=list(jobs),
            cache=cache,
            mask=batch["attention_mask"],  # (B, L)
            positions=batch["position_ids"][:, -1:],  # (B, 1)
            tokens=[],
            core=self,
        )
        state.advance(logits[:, -1, :])
        return state


def _forward(model, **inputs) -> tuple[torch.Tensor, object]:
    """(logits, cache) of one step, run by `step_model` (BLIP-2 keeps its language model's output, and cache, one
    level down)."""
    out = step_model(model, inputs)(**inputs)
    return out.logits, getattr(out, "language_model_outputs", out).cache


def to_arrays(inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Processor outputs as numpy arrays: they pickle as plain buffers (tensors would go through shared memory)."""
    return {name: value.numpy() for name, value in inputs.items()}


def serve(conn: Connection) -> int:
    """Load the model named by the parent's "start" message, say "ready" (or "failed"), then schedule until
    stopped. The exit status is 0 after a stop, 1 if loading failed."""
    kind, config = conn.recv()
    if kind != "start":
        raise RuntimeError(f"the engine core expected 'start' first, got {kind!r}")
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s [engine core] %(message)s")
    loaded = threading.Event()
    threading.Thread(target=_exit_if_orphaned, args=(conn, loaded), daemon=True).start()
    try:
        assistant = Assistant.load(config.model, device=config.device, dtype=config.dtype)
    except AssistantError as exc:
        conn.send(("failed", str(exc)))
        return 1
    finally:
        loaded.set()
    # after loading: the rule needs the model's size
    threads = apply_threads(assistant.model.num_parameters(), config.threads)
    core = EngineCore(assistant, conn, config)
    threading.Thread(target=core.receive, name="engine-core-receiver", daemon=True).start()
    info = {
        "device": str(assistant.device),
        "context_length": assistant.context_length,
        "threads": threads.threads,
    }
    conn.send(("ready", info))
    log.info("engine core ready: %s on %s, torch threads %s", config.model, assistant.device, threads)
    core.schedule()
    return 0


def _exit_if_orphaned(conn: Connection, loaded: threading.Event) -> None:
    """While the model loads (minutes, for a big one), nothing reads the socket; the parent says nothing
    until "ready", so anything readable means it is gone: stop loading for nobody."""
    while not loaded.wait(0.5):
        if conn.poll():
            log.warning("the server went away while the model loaded; the engine core exits")
            os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="The socket to the parent (inherited).")
    args = parser.parse_args(argv)
    # Ctrl-C (and a service manager's SIGTERM) reach the whole process group; the server decides when the
    # core stops, after it drained; if the server dies, the core sees its socket close
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with Connection(args.fd) as conn:
        status = serve(conn)
    # nothing is left to save: skip the interpreter's teardown (a second or more with torch loaded)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":  # run the module under its own name, so what it pickles names that module
    from serving.engines import engine_core

    raise SystemExit(engine_core.main())
