"""vLLM's async engine in-process on a GPU, imported only when this engine is chosen.

Written to vLLM's documented API: `AsyncEngineArgs`, `AsyncLLMEngine.from_engine_args`,
`generate({"prompt": ..., "multi_modal_data": {"image": [...]}}, SamplingParams, request_id)` and `abort`.
The prompt comes from the model's own chat template (the HF processor), exactly as the transformers engine
builds it, so both engines see the same text.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from assistant.cli import resolve_model
from assistant.errors import ConfigError
from assistant.inference import normalize_messages
from serving.engines.base import Delta, GenerationRequest
from serving.errors import ContextLengthExceeded, EngineUnavailable

if TYPE_CHECKING:
    from serving.metrics import Metrics
    from serving.settings import ServeSettings

log = logging.getLogger(__name__)


def import_vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise ConfigError(
            "the vllm engine needs vLLM on a CUDA machine: pip install 'llava-assistant[gpu]', "
            "or use --engine transformers (CPU/GPU) or --engine upstream (a separate vllm serve)"
        ) from exc


class VLLMEngine:
    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.vllm = import_vllm()  # fail at construction, before the server starts listening
        self.settings = settings
        self.metrics = metrics
        self.model_name = settings.model_name
        self.source = resolve_model(settings.model)
        self.engine: Any = None
        self.processor: Any = None
        self.context_length = 0
        self._running = 0
        self._stopping = False

    async def start(self) -> None:
        from transformers import AutoProcessor

        source = self.source
        args = self.vllm.AsyncEngineArgs(
            model=source,
            served_model_name=self.model_name,
            max_model_len=self.settings.max_model_len,
            gpu_memory_utilization=self.settings.gpu_memory_utilization,
            limit_mm_per_prompt={"image": self.settings.max_images},
        )
        self.engine = self.vllm.AsyncLLMEngine.from_engine_args(args)
        self.processor = await asyncio.to_thread(AutoProcessor.from_pretrained, source)
        config = await self.engine.get_model_config()
        self.context_length = int(config.max_model_len)
        log.info("vllm engine ready: %s (context %d)", source, self.context_length)

    async def stop(self, drain_timeout_s: float) -> None:
        self._stopping = True
        deadline = asyncio.get_running_loop().time() + drain_timeout_s
        while self._running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        if self.engine is not None and hasattr(self.engine, "shutdown"):
            self.engine.shutdown()

    def healthy(self) -> bool:
        return self.engine is not None and not self._stopping and not getattr(self.engine, "errored", False)

    def load(self) -> tuple[int, int]:
        return self._running, 0

    def _prompt(self, request: GenerationRequest) -> tuple[str, list, int]:
        messages, images = normalize_messages(request.messages, request.images)
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        tokens = int(
            self.processor(images=images or None, text=[prompt], return_tensors="pt")["input_ids"].shape[1]
        )
        return prompt, images, tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if not self.healthy():
            raise EngineUnavailable("the engine is not running; retry later or restart the server")
        prompt, images, prompt_tokens = await asyncio.to_thread(self._prompt, request)
        params = request.params
        if prompt_tokens + params.max_new_tokens > self.context_length:
            raise ContextLengthExceeded(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({params.max_new_tokens}) is over the model's "
                f"context of {self.context_length} tokens; shorten the messages or lower max_tokens",
                param="messages",
            )
        sampling = self.vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) or None,
            seed=params.seed,
            min_tokens=params.min_tokens,
        )
        inputs: dict[str, Any] = {"prompt": prompt}
        if images:
            inputs["multi_modal_data"] = {"image": images}
        return self._stream(inputs, sampling, request.request_id, prompt_tokens)

    async def _stream(
        self, inputs: dict, sampling: Any, request_id: str, prompt_tokens: int
    ) -> AsyncIterator[Delta]:
        self._running += 1
        sent, finished = 0, False
        try:
            async for output in self.engine.generate(inputs, sampling, request_id):
                completion = output.outputs[0]
                text = completion.text[sent:]
                sent = len(completion.text)
                reason = completion.finish_reason if output.finished else None
                if reason is not None:
                    reason = "length" if reason == "length" else "stop"
                    finished = True
                yield Delta(text, prompt_tokens, len(completion.token_ids), reason)
        finally:
            self._running -= 1
            if not finished:
                await self.engine.abort(request_id)
