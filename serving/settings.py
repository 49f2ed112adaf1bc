"""Service settings: defaults < environment (ASSISTANT_<NAME>) < command-line flags; checked in __post_init__."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from assistant.errors import ConfigError

ENV_PREFIX = "ASSISTANT_"
OCR_MODES = ("auto", "on", "off")
DEFAULT_MODEL_NAME = "assistant-default"


@dataclass
class ServeSettings:
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model directory or hub id (transformers/vllm; default: the embedded model), or the "
            "upstream's model id (upstream; default: its first model)."
        },
    )
    engine: str = field(default="transformers", metadata={"help": "transformers, vllm or upstream."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    api_keys: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "API keys clients must send as a Bearer token (repeat the flag; env: comma-separated). "
            "Empty: no auth.",
            "flag": "--api-key",
            "env": "API_KEY",
        },
    )
    served_model_name: str | None = field(
        default=None, metadata={"help": "Name clients use in `model` (default: the model directory's name)."}
    )
    device: str = field(default="auto", metadata={"help": "transformers engine: cpu, cuda or auto."})
    dtype: str | None = field(default=None, metadata={"help": "transformers engine: float32, bfloat16, ..."})
    max_batch_size: int = field(
        default=8, metadata={"help": "transformers engine: requests decoded together."}
    )
    batch_wait_ms: float = field(
        default=0.0,
        metadata={
            "help": "transformers engine: wait this long for more requests before starting a batch (requests "
            "that come later join the running batch at its next step anyway)."
        },
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "transformers engine: torch threads; 0 chooses: 1 for models under 50M parameters, else "
            "every CPU this process may use (affinity, cgroup quota). docs/serving.md: sizing."
        },
    )
    max_waiting: int = field(default=256, metadata={"help": "Queued requests before new ones get 429."})
    max_body_bytes: int = field(
        default=32 * 1024 * 1024, metadata={"help": "Largest request body (413 above)."}
    )
    max_images: int = field(default=8, metadata={"help": "Most images in one request."})
    max_image_bytes: int = field(default=10 * 1024 * 1024, metadata={"help": "Largest encoded image."})
    max_image_pixels: int = field(default=25_000_000, metadata={"help": "Most pixels in one image."})
    min_image_side: int = field(default=4, metadata={"help": "Smallest image side in pixels."})
    max_image_side: int = field(default=8192, metadata={"help": "Largest image side in pixels."})
    max_n: int = field(default=4, metadata={"help": "Largest `n` (choices per request)."})
    default_max_tokens: int = field(default=256, metadata={"help": "max_tokens when a request gives none."})
    fetch_timeout_s: float = field(default=10.0, metadata={"help": "Whole-fetch time limit for image URLs."})
    fetch_max_redirects: int = field(default=3, metadata={"help": "Redirects followed per image URL."})
    fetch_allow_hosts: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Hosts, IPs or CIDRs that image URLs may reach even if internal (e.g. 127.0.0.1). "
            "Repeat the flag; env: comma-separated.",
            "flag": "--fetch-allow-host",
        },
    )
    ocr: str = field(
        default="off",
        metadata={
            "help": "Default OCR mode when a request gives none: auto, on, off (off: the embedded model does "
            "not yet use OCR hints; use auto for models that do)."
        },
    )
    ocr_engine: str = field(default="rapidocr", metadata={"help": "OCR engine of assistant.ocr."})
    upstream_url: str | None = field(
        default=None,
        metadata={"help": "upstream engine: base URL of an OpenAI-compatible API, e.g. http://vllm:8000/v1."},
    )
    upstream_api_key: str | None = field(default=None, metadata={"help": "upstream engine: its API key."})
    upstream_timeout_s: float = field(
        default=300.0, metadata={"help": "upstream engine: per-request time limit."}
    )
    max_model_len: int | None = field(default=None, metadata={"help": "vllm engine: context length."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm engine: GPU memory fraction."})
    drain_timeout_s: float = field(
        default=30.0, metadata={"help": "On shutdown, wait this long for requests."}
    )

    def __post_init__(self) -> None:
        from serving.engines.base import ENGINES

        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; choose from {sorted(ENGINES)}")
        if self.ocr not in OCR_MODES:
            raise ConfigError(f"ocr must be one of {list(OCR_MODES)}, got {self.ocr!r}")
        if self.engine == "upstream" and not self.upstream_url:
            raise ConfigError("the upstream engine needs --upstream-url (e.g. http://127.0.0.1:8001/v1)")
        if self.upstream_url and not self.upstream_url.startswith(("http://", "https://")):
            raise ConfigError(f"upstream_url must start with http:// or https://, got {self.upstream_url!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        positive = (
            "max_batch_size",
            "max_waiting",
            "max_body_bytes",
            "max_images",
            "max_image_bytes",
            "max_image_pixels",
            "min_image_side",
            "max_image_side",
            "max_n",
            "default_max_tokens",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0: chosen by model size and CPUs), got {self.threads}")
        if self.min_image_side > self.max_image_side:
            raise ConfigError("min_image_side must not exceed max_image_side")
        if self.fetch_timeout_s <= 0 or self.batch_wait_ms < 0 or self.drain_timeout_s < 0:
            raise ConfigError("fetch_timeout_s must be > 0, batch_wait_ms and drain_timeout_s >= 0")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if any(not key for key in self.api_keys):
            raise ConfigError("an API key must not be empty; remove the empty value")

    @property
    def model_name(self) -> str:
        """The name clients send as `model`."""
        if self.served_model_name:
            return self.served_model_name
        if self.model:
            return Path(self.model.rstrip("/")).name or self.model
        return DEFAULT_MODEL_NAME

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Settings from ASSISTANT_* variables, then `overrides` (command-line flags) on top."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.metadata.get("env", f.name.upper()))
            if raw is not None:
                values[f.name] = parse_value(f.name, raw, f.default, str(f.type))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parse_value(name: str, raw: str, default: Any, annotation: str = "") -> Any:
    """Convert an environment string to the field's type (from its default, else its annotation)."""
    if default is None:
        if not raw:
            return None
        default = 0 if annotation.startswith("int") else 0.0 if annotation.startswith("float") else ""
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a {type(default).__name__}") from exc
    return raw
