"""The one small async interface every engine implements, and the registry that picks one by name."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from assistant.errors import ConfigError
from assistant.inference import SamplingParams

if TYPE_CHECKING:
    from serving.metrics import Metrics
    from serving.settings import ServeSettings


@dataclass
class GenerationRequest:
    """One completion to produce: normalized chat messages (image parts as {"type": "image"}) and their images."""

    request_id: str
    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class Delta:
    """A piece of the answer. `completion_tokens` counts every token generated so far; the last delta of a stream
    has `finish_reason` set ("stop" or "length")."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


class Engine(Protocol):
    """Given chat messages with images and sampling parameters, stream text deltas with token counts.

    `generate` validates and admits the request before it returns (so errors such as a prompt over the context
    surface before any byte is streamed); closing the returned iterator aborts the request.
    """

    model_name: str

    async def start(self) -> None: ...

    async def stop(self, drain_timeout_s: float) -> None: ...

    def healthy(self) -> bool: ...

    def load(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        ...

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]: ...


# Engine name -> "module:Class"; imported only when chosen, so vLLM stays optional.
ENGINES: dict[str, str] = {
    "transformers": "serving.engines.transformers_engine:TransformersEngine",
    "vllm": "serving.engines.vllm_engine:VLLMEngine",
    "upstream": "serving.engines.upstream:UpstreamEngine",
}


def build_engine(settings: ServeSettings, metrics: Metrics) -> Engine:
    """Instantiate the engine named by `settings.engine` (nothing heavy happens until `start()`)."""
    if settings.engine not in ENGINES:
        raise ConfigError(f"unknown engine {settings.engine!r}; choose from {sorted(ENGINES)}")
    module_name, class_name = ENGINES[settings.engine].split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(settings, metrics)


def map_finish_reason(
    reason: str | None,
    reasons: Mapping[str, str],
    errors: Mapping[str, Callable[[], Exception]],
    source: str,
) -> str | None:
    """A backend's finish reason -> ours ("stop" or "length"); the ones in `errors` are raised as their error,
    an unknown one is logged and answered "stop"."""
    if reason is None:
        return None
    if reason in errors:
        raise errors[reason]()
    if reason not in reasons:
        logging.getLogger(__name__).warning(
            "%s sent an unknown finish reason %r; answering 'stop'", source, reason
        )
    return reasons.get(reason, "stop")
