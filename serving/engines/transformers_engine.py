"""The transformers engine, as the API server sees it: it prepares each request here (chat template, image
processing, context check) and hands it to its engine core, a process of its own that batches and decodes
(`serving.engines.engine_core`); a reader thread turns the core's step messages into each request's stream.

The core loads the model; this side loads only the processor. If the core dies, every request in it gets a 503
`engine_unavailable` and `healthy()` turns false."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import site
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from assistant.anyres import with_fast_anyres
from assistant.cli import resolve_model
from assistant.errors import ModelLoadError
from assistant.inference import normalize_messages
from assistant.processing import load_processor
from serving.engines.base import Delta, GenerationRequest
from serving.engines.engine_core import CoreConfig, Step, to_arrays
from serving.errors import ContextLengthExceeded, EngineUnavailable, Overloaded

if TYPE_CHECKING:
    from serving.metrics import Metrics
    from serving.settings import ServeSettings

log = logging.getLogger(__name__)
NOT_RUNNING = "the engine is not running; retry later or restart the server"


@dataclass
class _Job:
    """A request in the core, as this process tracks it: where its deltas go."""

    id: int
    prompt_tokens: int
    loop: asyncio.AbstractEventLoop
    engine: TransformersEngine
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)


def _deliver(items: list[tuple[asyncio.Queue, Delta | Exception]]) -> None:
    for out, item in items:
        out.put_nowait(item)


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
        self.job.engine.cancel(self.job)


class TransformersEngine:
    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model_name = settings.model_name
        self.source = resolve_model(settings.model)  # a missing embedded model is reported before start-up
        self.processor = None
        self.context_length = 0
        self.device = "?"
        self.threads = 0
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._outbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()  # to the core, in order
        self._sender: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._jobs: dict[int, _Job] = {}  # sent to the core and not finished
        self._next_id = 0  # requests sent to the core
        self._core = Step([], [], 0, [], 0, 0, 0)  # its last report (running, waiting, received)
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # _jobs and _dead, between the event loop and the reader and sender
        self._dead = False  # the core is gone and its jobs were failed: no new ones

    # --- life cycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the engine core and, while it loads the model, load the processor here."""
        await asyncio.to_thread(self._spawn_core)
        processor = asyncio.create_task(asyncio.to_thread(load_processor, str(self.source)))
        try:
            await asyncio.to_thread(self._await_core)  # a broken model is reported by the core, clearly
            try:
                self.processor = with_fast_anyres(await processor)  # same pixels, faster (assistant.anyres)
            except Exception as exc:  # the core loaded the model, but this side cannot prepare inputs for it
                self._process.kill()
                await asyncio.to_thread(self._process.wait)
                self._conn.close()
                raise ModelLoadError(
                    f"the processor in {str(self.source)!r} could not be loaded ({type(exc).__name__}); "
                    "rebuild or re-download the model"
                ) from exc
        finally:
            if not processor.done():
                processor.cancel()
        self._reader = threading.Thread(target=self._read, name="engine-core-reader", daemon=True)
        self._reader.start()
        self._sender = threading.Thread(target=self._write, name="engine-core-sender", daemon=True)
        self._sender.start()
        log.info(
            "transformers engine ready: %s on %s, %d torch threads (engine core pid %d)",
            self.source,
            self.device,
            self.threads,
            self._process.pid,
        )

    def _spawn_core(self) -> None:
        """Start `python -m serving.engines.engine_core` on one end of a socket pair and tell it what to load."""
        mine, theirs = socket.socketpair()
        command = [sys.executable, "-m", "serving.engines.engine_core", "--fd", str(theirs.fileno())]
        with theirs:
            self._process = subprocess.Popen(
                command, pass_fds=[theirs.fileno()], env=_core_environment(), stdin=subprocess.DEVNULL
            )
        self._conn = Connection(mine.detach())
        config = CoreConfig(
            model=str(self.source),
            device=self.settings.device,
            dtype=self.settings.dtype,
            max_batch_size=self.settings.max_batch_size,
            batch_wait_ms=self.settings.batch_wait_ms,
            threads=self.settings.threads,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        self._conn.send(("start", config))

    def _await_core(self) -> None:
        """Wait until the core says it loaded the model; raise ModelLoadError with its reason if it did not."""
        while not self._conn.poll(0.2):
            if self._process.poll() is not None:
                break
        try:
            kind, info = self._conn.recv()
        except (EOFError, OSError):  # it died before it could say why
            kind, status = "failed", self._process.wait()
            info = f"the engine process exited with status {status} while loading {self.source}; see its log"
        if kind != "ready":
            self._process.wait()
            self._conn.close()
            raise ModelLoadError(info)
        self.device, self.context_length, self.threads = (
            info["device"],
            info["context_length"],
            info["threads"],
        )
        self.metrics.engine_threads.set(self.threads)
        # this side preprocesses images (torch ops too): on CPU, the same setting as the core
        if self.device == "cpu":
            torch.set_num_threads(self.threads)

    async def stop(self, drain_timeout_s: float) -> None:
        """Let the core finish the running and queued requests (up to `drain_timeout_s`), then end it."""
        self._stopping.set()
        if self._process is None:
            return
        self._send(("stop",))  # cancellations may still follow while it drains
        try:
            await asyncio.to_thread(self._process.wait, drain_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("the engine core did not drain in %.0f s; stopping it", drain_timeout_s)
            self._process.kill()
            await asyncio.to_thread(self._process.wait)
        self._outbox.put(None)  # the sender ends
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 5)
        self._fail_all("the server is shutting down; retry on another one")

    def healthy(self) -> bool:
        return (
            self._reader is not None
            and self._reader.is_alive()
            and self._sender is not None
            and self._sender.is_alive()
            and self._process.poll() is None
            and not self._stopping.is_set()
            and not self._dead
        )

    def load(self) -> tuple[int, int]:
        """(running, waiting) as the core last reported them, plus the requests on their way to it."""
        core = self._core
        return core.running, core.waiting + self._next_id - core.received

    # --- requests ----------------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if not self.healthy():
            raise EngineUnavailable(NOT_RUNNING)
        if self.load()[1] >= self.settings.max_waiting:
            raise Overloaded("too many requests are waiting; retry in a moment")
        inputs, prompt_tokens = await asyncio.to_thread(self._prepare, request)
        max_tokens = request.params.max_new_tokens
        if prompt_tokens + max_tokens > self.context_length:
            raise ContextLengthExceeded(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) is over the model's context "
                f"of {self.context_length} tokens; shorten the messages or lower max_tokens",
                param="messages",
            )
        with self._lock:
            if self._dead:  # the core died while this request was prepared
                raise EngineUnavailable(NOT_RUNNING)
            self._next_id += 1
            job = _Job(self._next_id, prompt_tokens, asyncio.get_running_loop(), self)
            self._jobs[job.id] = job
        self._send(("add", job.id, inputs, max_tokens, request.params))
        self.metrics.prompt_tokens.inc(prompt_tokens)
        return _JobStream(job)

    def _prepare(self, request: GenerationRequest) -> tuple[dict, int]:
        """Chat template + image processing for one request (arrays for the core, prompt tokens)."""
        messages, images = normalize_messages(request.messages, request.images)
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=images or None, text=[prompt], return_tensors="pt")
        return to_arrays(inputs), int(inputs["input_ids"].shape[1])

    def cancel(self, job: _Job) -> None:
        """Stop generating for `job` (its reader left); the core drops it at its next step."""
        if not job.cancelled.is_set():
            job.cancelled.set()
            with self._lock:
                known = self._jobs.pop(job.id, None) is not None
            if known:
                self._send(("cancel", job.id))

    def _send(self, message: tuple) -> None:
        """Queue `message` for the core. A request's inputs can be larger than the socket's buffer, so a
        thread of its own writes them: the event loop never waits for the core to read."""
        self._outbox.put(message)

    def _write(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._conn.send(message)
            except (OSError, ValueError):  # the core is gone; the reader fails what it had
                return
            except Exception:  # a message that does not pickle, say: that request fails, the rest go on
                log.exception("a %r message could not be sent to the engine core", message[0])
                if message[0] == "add":
                    self._fail(message[1], "the engine could not take this request; retry it")

    # --- the reader thread -------------------------------------------------------------------------------

    def _read(self) -> None:
        """Turn the core's step messages into deltas for each request's loop, until the core goes away."""
        try:
            while True:
                kind, step = self._conn.recv()
                if kind == "step":
                    self._on_step(step)
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("the engine core's messages could not be read")
        finally:
            if not self._stopping.is_set():
                log.error("the engine core exited (status %s); failing its requests", self._process.poll())
            self._fail_all(NOT_RUNNING)

    def _on_step(self, step: Step) -> None:
        self.metrics.completion_tokens.inc(step.tokens)
        for size in step.batches:
            self.metrics.batch_size.observe(size)
        self._core = step
        out: dict[asyncio.AbstractEventLoop, list] = {}
        with self._lock:
            for job_id, text, count, reason in step.deltas:
                job = self._jobs.get(job_id) if reason is None else self._jobs.pop(job_id, None)
                if job is not None:
                    delta = Delta(text, job.prompt_tokens, count, reason)
                    out.setdefault(job.loop, []).append((job.out, delta))
            for job_id, message in step.errors:
                job = self._jobs.pop(job_id, None)
                if job is not None:
                    out.setdefault(job.loop, []).append((job.out, EngineUnavailable(message)))
        for loop, items in out.items():
            _post(loop, items)

    def _fail(self, job_id: int, message: str) -> None:
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None:
            _post(job.loop, [(job.out, EngineUnavailable(message))])

    def _fail_all(self, message: str) -> None:
        """The core is gone: fail every request it had, and take no more."""
        with self._lock:
            self._dead = True
            jobs, self._jobs = self._jobs, {}
            self._core = Step([], [], 0, [], 0, 0, self._next_id)
        for job in jobs.values():
            _post(job.loop, [(job.out, EngineUnavailable(message))])


def _core_environment() -> dict[str, str]:
    """The server's environment, where the working directory cannot shadow the code (PYTHONSAFEPATH) and
    `serving` is importable: a checkout run in place adds its root to the end of PYTHONPATH (never a
    site-packages directory, which would come before the standard library there)."""
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    root = Path(__file__).resolve().parents[2]
    paths = sysconfig.get_paths()
    installed = {Path(p).resolve() for p in (*site.getsitepackages(), paths["purelib"], paths["platlib"])}
    if root not in installed:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(root)) if p)
    return env


def _post(loop: asyncio.AbstractEventLoop, items: list) -> None:
    try:
        loop.call_soon_threadsafe(_deliver, items)
    except RuntimeError:  # that event loop is closed: nobody is listening any more
        pass
