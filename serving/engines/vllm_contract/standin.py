"""A small stand-in for the part of vLLM's API the vllm engine uses, for CPU tests of the engine's mapping.

Each class here is named after the vLLM class it stands for, and its public members are a subset of that
class's members in vLLM's source: `python -m serving.engines.vllm_contract` checks this (members starting with
an underscore are the stand-in's own controls), so the stand-in cannot drift from the release the project
names. Behaviour follows vLLM 0.30.0: `generate` is an async generator that validates and admits the request
on its first step (so errors surface there), yields cumulative `RequestOutput`s and aborts the request when it
is closed early; finish reasons are vLLM's strings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

# --- exceptions (vllm/exceptions.py, vllm/v1/engine/exceptions.py) --------------------------------------------


class VLLMError(Exception):
    pass


class VLLMClientError(VLLMError):
    pass


class VLLMServerError(VLLMError):
    pass


class VLLMValidationError(VLLMClientError):
    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value


class VLLMUnprocessableEntityError(VLLMClientError):
    pass


class GracefulHTTPError(VLLMError):
    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


class QueueOverflowError(GracefulHTTPError):
    def __init__(self) -> None:
        super().__init__("The engine is currently busy and cannot accept new requests.", 503)


class MaxQueuedTokensError(GracefulHTTPError):
    def __init__(self) -> None:
        super().__init__("The engine has reached its prefill token backlog limit.", 503)


class EngineDeadError(VLLMServerError):
    def __init__(self) -> None:
        super().__init__("EngineCore encountered an issue. See stack trace (above) for the root cause.")


class EngineGenerateError(VLLMServerError):
    pass


# --- arguments and outputs -----------------------------------------------------------------------------------


@dataclass
class AsyncEngineArgs:  # vllm/engine/arg_utils.py
    model: str = "facebook/opt-125m"
    served_model_name: str | list[str] | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    limit_mm_per_prompt: dict[str, int] = field(default_factory=dict)
    max_num_seqs: int | None = None


@dataclass
class SamplingParams:  # vllm/sampling_params.py
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    seed: int | None = None
    min_tokens: int = 0

    def __post_init__(self) -> None:  # vLLM's _verify_args, in part
        if self.max_tokens is not None and self.max_tokens < 1:
            raise VLLMValidationError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise VLLMValidationError(
                "min_tokens must be less than or equal to max_tokens", parameter="min_tokens"
            )


@dataclass
class CompletionOutput:  # vllm/outputs.py
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # vllm/outputs.py
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    outputs: list[CompletionOutput]
    finished: bool


@dataclass
class ModelConfig:  # vllm/config/model.py
    max_model_len: int = 64


@dataclass
class SchedulerConfig:  # vllm/config/scheduler.py
    max_num_seqs: int = 2


@dataclass
class VllmConfig:  # vllm/config/vllm.py
    model_config: ModelConfig = field(default_factory=ModelConfig)
    scheduler_config: SchedulerConfig = field(default_factory=SchedulerConfig)


# --- the engine ----------------------------------------------------------------------------------------------


@dataclass
class Script:
    """What the stand-in engine does: the text pieces it generates (one token each), the finish reason of an
    answer that ends before max_tokens, an exception raised when the request is added (validation, admission,
    a dead engine) or after `fail_after` outputs, the image tokens per image and context of its model, and whether
    the engine has died; `aborted` and `shut_down` record what the engine under test asked for."""

    pieces: Sequence[str] = ("Two", " red", " squares", ".")
    finish_reason: str = "stop"
    fail_on_add: BaseException | None = None
    fail_after: int | None = None
    error: BaseException | None = None
    image_tokens: int = 10
    max_model_len: int = 64
    max_num_seqs: int = 2
    dead: bool = False
    aborted: list[str] = field(default_factory=list)
    shut_down: bool = False


class BaseRenderer:  # vllm/renderers/base.py
    def __init__(self, script: Script) -> None:
        self._script = script

    async def render_cmpl_async(self, prompts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One whitespace-separated word is one token, each image `image_tokens` more; over the context is
        vLLM's VLLMValidationError(parameter="input_tokens")."""
        rendered = []
        for prompt in prompts:
            images = (prompt.get("multi_modal_data") or {}).get("image") or []
            count = len(prompt["prompt"].split()) + self._script.image_tokens * len(images)
            if count > self._script.max_model_len:
                raise VLLMValidationError(
                    f"This model's maximum context length is {self._script.max_model_len} tokens.",
                    parameter="input_tokens",
                    value=count,
                )
            kind = "multimodal" if images else "token"
            rendered.append(
                {"type": kind, "prompt": prompt["prompt"], "prompt_token_ids": list(range(count))}
            )
        return rendered


class AsyncLLM:  # vllm/v1/engine/async_llm.py; vllm.AsyncLLMEngine is an alias of it
    _script: Script

    def __init__(self, vllm_config: VllmConfig) -> None:
        self.vllm_config = vllm_config
        self.model_config = vllm_config.model_config
        self.renderer = BaseRenderer(self._script)

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs) -> AsyncLLM:
        script = cls._script
        max_len = engine_args.max_model_len or script.max_model_len
        config = VllmConfig(
            ModelConfig(max_len), SchedulerConfig(engine_args.max_num_seqs or script.max_num_seqs)
        )
        return cls(config)

    @property
    def errored(self) -> bool:
        return self._script.dead

    def shutdown(self, timeout: float | None = None) -> None:
        self._script.shut_down = True

    async def abort(self, request_id: str | Sequence[str], internal: bool = False) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        self._script.aborted.extend(ids)

    async def generate(
        self, prompt: dict[str, Any], sampling_params: SamplingParams, request_id: str
    ) -> AsyncGenerator[RequestOutput, None]:
        script = self._script
        if script.dead:
            raise EngineDeadError()
        if script.fail_on_add is not None:
            raise script.fail_on_add
        pieces = list(script.pieces)[: sampling_params.max_tokens]
        truncated = len(pieces) < len(script.pieces)
        text, ids = "", []
        try:
            for i, piece in enumerate(pieces):
                if script.fail_after is not None and i >= script.fail_after:
                    raise script.error or EngineGenerateError()
                await asyncio.sleep(0)
                text, ids = text + piece, [*ids, i]
                last = i == len(pieces) - 1
                reason = ("length" if truncated else script.finish_reason) if last else None
                completion = CompletionOutput(0, text, ids, finish_reason=reason)
                yield RequestOutput(
                    request_id, prompt.get("prompt"), prompt["prompt_token_ids"], [completion], last
                )
        except (asyncio.CancelledError, GeneratorExit):
            await self.abort(request_id, internal=True)
            raise


def standin_vllm(script: Script) -> ModuleType:
    """A `vllm`-shaped module whose engine follows `script`; pass it as `VLLMEngine(..., vllm=module)`."""
    module = ModuleType("vllm_standin")
    module.AsyncEngineArgs = AsyncEngineArgs
    module.AsyncLLMEngine = type("AsyncLLM", (AsyncLLM,), {"_script": script})
    module.SamplingParams = SamplingParams
    return module
