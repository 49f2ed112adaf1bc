"""vLLM's async engine in-process on a GPU, imported only when this engine is chosen.

Written to vLLM 0.30.0's API (the `gpu` extra's pin) and checked against its source by
`python -m serving.engines.vllm_contract --wheel-dir DIR`: `AsyncEngineArgs`, `AsyncLLMEngine.from_engine_args`
(an alias of `AsyncLLM`), its `model_config`, `renderer.render_cmpl_async` (the non-deprecated way to turn a
prompt with images into engine input), `generate(engine_input, SamplingParams, request_id)`, `abort`,
`errored` and `shutdown`. The prompt text comes from the model's own chat template (the HF processor), exactly
as the transformers engine builds it, so both engines see the same text; vLLM's renderer processes the images
once and its token count is the one checked against the context.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from assistant.cli import resolve_model
from assistant.errors import ConfigError
from assistant.inference import normalize_messages
from assistant.qformer import BLIP2_MODEL_TYPE
from serving.engines.base import Delta, GenerationRequest, map_finish_reason
from serving.errors import (
    APIError,
    ContextLengthExceeded,
    EngineUnavailable,
    GenerationFailed,
    InvalidRequest,
    Overloaded,
)

if TYPE_CHECKING:
    from vllm.inputs.engine import MultiModalInput, TokensInput
    from vllm.outputs import CompletionOutput, RequestOutput

    from serving.metrics import Metrics
    from serving.settings import ServeSettings

log = logging.getLogger(__name__)
NOT_RUNNING = "the engine is not running; retry later or restart the server"

# vLLM's finish reasons (FINISH_REASON_STRINGS in vllm/v1/engine/__init__.py) that end an answer -> ours.
# "repetition" (vLLM's repetition detector ended it) has no OpenAI name and is reported as "stop".
FINISH_REASONS = {"stop": "stop", "length": "length", "repetition": "stop"}
# The other two are failures, raised rather than reported.
FINISH_ERRORS: dict[str, Callable[[], APIError]] = {
    "error": lambda: GenerationFailed("the model failed while generating this answer; retry it"),
    "abort": lambda: EngineUnavailable("the engine stopped this request (it is shutting down); retry it"),
}


def _validation_error(exc: BaseException) -> APIError:
    param = getattr(exc, "parameter", None)
    if param in ("input_tokens", "input_text"):
        return ContextLengthExceeded(
            "the prompt is over the model's context; shorten the messages or lower max_tokens",
            param="messages",
        )
    where = f" (parameter {param})" if param else ""
    return InvalidRequest(f"the model refused the request{where}; check its parameters and images")


# vLLM's exception classes (vllm/exceptions.py, vllm/v1/engine/exceptions.py), most specific first, by the
# name of a class in the exception's MRO -> what the client sees (never vLLM's own message).
VLLM_ERRORS: dict[str, Callable[[BaseException], APIError]] = {
    "QueueOverflowError": lambda e: Overloaded("the engine's queue is full; retry in a moment"),
    "MaxQueuedTokensError": lambda e: Overloaded(
        "the engine has too many prompts waiting; retry in a moment"
    ),
    "VLLMValidationError": _validation_error,
    "VLLMUnprocessableEntityError": lambda e: InvalidRequest(
        "the model could not process the images; check them"
    ),
    "VLLMClientError": lambda e: InvalidRequest("the model refused the request; check its parameters"),
    "GracefulHTTPError": lambda e: EngineUnavailable("the engine cannot take this request now; retry later"),
    "EngineDeadError": lambda e: EngineUnavailable("the engine has died; restart the server"),
    "EngineGenerateError": lambda e: GenerationFailed("the model failed on this request; retry it"),
}


def api_error(exc: BaseException) -> APIError | None:
    """The client-facing error for an exception vLLM raised, or None when it is not one of vLLM's."""
    if isinstance(exc, APIError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    for name, make in VLLM_ERRORS.items():
        if name in names:
            return make(exc)
    return None


def finish_reason(reason: str | None) -> str | None:
    """vLLM's finish reason -> ours ("stop" or "length"); raises the APIError for "error" and "abort"."""
    return map_finish_reason(reason, FINISH_REASONS, FINISH_ERRORS, "vLLM")


def to_delta(output: RequestOutput, sent: int, prompt_tokens: int) -> tuple[Delta, int]:
    """One cumulative vLLM output -> the new text as a Delta, and how many characters have been sent."""
    completion: CompletionOutput = output.outputs[0]
    reason = finish_reason(completion.finish_reason) if output.finished else None
    return Delta(completion.text[sent:], prompt_tokens, len(completion.token_ids), reason), len(
        completion.text
    )


def import_vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise ConfigError(
            "the vllm engine needs vLLM on a CUDA machine: pip install 'llava-assistant[gpu]' (or run the server "
            "in vLLM's own environment), or use --engine transformers or --engine upstream (a separate vllm serve)"
        ) from exc


def refuse_unservable(source: str) -> None:
    """Refuse, before anything loads, a model this engine would serve wrong.

    Q-Former (BLIP-2) models: vLLM 0.30's BLIP-2 always inserts its `num_query_tokens` image tokens at position 0
    and takes one image per prompt (vllm/model_executor/models/blip2.py, `_get_prompt_updates`), while this
    project's Q-Former chat template writes them inside the user turn; vLLM would read those as text and raise
    nothing. docs/connectors.md says what a servable variant would change."""
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except (OSError, ValueError):
        return  # vLLM's own loading says what is wrong with the directory
    if model_type == BLIP2_MODEL_TYPE:
        raise ConfigError(
            f"{source!r} is a Q-Former (BLIP-2) model, which --engine vllm does not serve (vLLM puts the query tokens "
            "at the start of the prompt, this model's template puts them in the user turn); use --engine transformers"
        )


class VLLMEngine:
    def __init__(self, settings: ServeSettings, metrics: Metrics, *, vllm: Any = None) -> None:
        self.source = resolve_model(settings.model)
        refuse_unservable(self.source)
        self.vllm = vllm or import_vllm()  # fail at construction, before the server starts listening
        self.settings = settings
        self.metrics = metrics
        self.model_name = settings.model_name
        self.engine: Any = None
        self.processor: Any = None
        self.context_length = 0
        self.max_num_seqs = 0
        self._running = 0
        self._stopping = False

    async def start(self) -> None:
        from assistant.processing import load_processor

        args = self.vllm.AsyncEngineArgs(
            model=self.source,
            served_model_name=self.model_name,
            max_model_len=self.settings.max_model_len,
            gpu_memory_utilization=self.settings.gpu_memory_utilization,
            limit_mm_per_prompt={"image": self.settings.max_images},
        )
        self.engine = self.vllm.AsyncLLMEngine.from_engine_args(args)
        self.processor = await asyncio.to_thread(load_processor, self.source)
        self.context_length = int(self.engine.model_config.max_model_len)
        self.max_num_seqs = int(self.engine.vllm_config.scheduler_config.max_num_seqs)
        log.info(
            "vllm engine ready: %s (context %d, %d sequences at once)",
            self.source,
            self.context_length,
            self.max_num_seqs,
        )

    async def stop(self, drain_timeout_s: float) -> None:
        self._stopping = True
        deadline = asyncio.get_running_loop().time() + drain_timeout_s
        while self._running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        if self.engine is not None:
            self.engine.shutdown()

    def healthy(self) -> bool:
        return self.engine is not None and not self._stopping and not self.engine.errored

    def load(self) -> tuple[int, int]:
        """(running, waiting): vLLM runs up to `max_num_seqs` requests at once, the rest wait."""
        return min(self._running, self.max_num_seqs), max(0, self._running - self.max_num_seqs)

    def _prompt(self, request: GenerationRequest) -> dict[str, Any]:
        messages, images = normalize_messages(request.messages, request.images)
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        prompt: dict[str, Any] = {"prompt": text}
        if images:
            prompt["multi_modal_data"] = {"image": images}
        return prompt

    async def _render(self, request: GenerationRequest) -> TokensInput | MultiModalInput:
        """Chat template, then vLLM's renderer: tokens and processed images, ready for `generate`."""
        prompt = await asyncio.to_thread(self._prompt, request)
        (engine_input,) = await self.engine.renderer.render_cmpl_async([prompt])
        return engine_input

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Render, check and submit the request, and wait for vLLM's first output, so that validation,
        admission (a full queue) and a dead engine surface as errors before any byte is streamed."""
        if not self.healthy():
            raise EngineUnavailable(NOT_RUNNING)
        if self.load()[1] >= self.settings.max_waiting:
            raise Overloaded("too many requests are waiting; retry in a moment")
        params = request.params
        try:
            sampling = self.vllm.SamplingParams(
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop) or None,
                seed=params.seed,
                min_tokens=params.min_tokens,
            )
            engine_input: TokensInput | MultiModalInput = await self._render(request)
        except Exception as exc:
            raise _mapped(exc) from exc
        prompt_tokens = len(engine_input["prompt_token_ids"])
        if prompt_tokens + params.max_new_tokens > self.context_length:
            raise ContextLengthExceeded(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({params.max_new_tokens}) is over the model's "
                f"context of {self.context_length} tokens; shorten the messages or lower max_tokens",
                param="messages",
            )
        stream = _VLLMStream(self, request.request_id, prompt_tokens)
        await stream.begin(self.engine.generate(engine_input, sampling, request.request_id))
        self.metrics.prompt_tokens.inc(prompt_tokens)
        return stream


def _mapped(exc: BaseException) -> APIError:
    error = api_error(exc)
    if error is not None:
        return error
    log.exception("the vllm engine failed on a request")
    return EngineUnavailable("the engine failed on this request; retry later")


class _VLLMStream:
    """Deltas from one vLLM request; `aclose()` (or a client going away) aborts it in vLLM."""

    def __init__(self, engine: VLLMEngine, request_id: str, prompt_tokens: int) -> None:
        self.owner = engine
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.outputs: Any = None
        self.first: Any = None
        self.sent = 0
        self.tokens = 0
        self.finished = False
        self.closed = False

    async def begin(self, outputs: Any) -> None:
        """Start vLLM's generator and keep its first output; on failure close it and raise our error."""
        self.outputs = outputs
        self.owner._running += 1
        try:
            self.first = await self.outputs.__anext__()
        except StopAsyncIteration:
            await self.aclose()
            raise EngineUnavailable("the engine ended the request without an answer; retry it") from None
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, Exception):
                raise _mapped(exc) from exc
            raise

    def __aiter__(self) -> _VLLMStream:
        return self

    async def __anext__(self) -> Delta:
        if self.finished or self.closed:
            raise StopAsyncIteration
        try:
            if self.first is not None:
                output, self.first = self.first, None
            else:
                output = await self.outputs.__anext__()
            delta, self.sent = to_delta(output, self.sent, self.prompt_tokens)
            if delta.finish_reason is not None:
                self.finished = True
                async for _ in self.outputs:  # vLLM's generator returns right after the finished output
                    pass
        except StopAsyncIteration:
            await self.aclose()
            raise EngineUnavailable(
                "the engine ended the request without a finish reason; retry it"
            ) from None
        except Exception as exc:
            await self.aclose()
            raise _mapped(exc) from exc
        self.owner.metrics.completion_tokens.inc(delta.completion_tokens - self.tokens)
        self.tokens = delta.completion_tokens
        if self.finished:
            await self.aclose()
        return delta

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.owner._running -= 1
        if not self.finished:  # vLLM aborts a request whose generator is closed before it finished
            await self.outputs.aclose()
            try:  # and again by id, in case it had not started; a dead engine cannot abort, nor needs to
                await self.owner.engine.abort(self.request_id)
            except Exception:
                log.debug("abort of %s failed", self.request_id, exc_info=True)
