"""Arguments of an evaluation run: one dataclass for every benchmark, read from YAML and the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from assistant.errors import ConfigError

BENCHMARK_NAMES = ("pope", "chair", "vqa", "ocr", "judge")
OCR_MODES = ("off", "on", "auto")
CHAIR_PROMPT = "Please describe this image in detail."
# room for answers that list what they see before "Answer:" (evals.parsing.final_answer); short answers stop early
DEFAULT_MAX_TOKENS = {"pope": 64, "chair": 512, "vqa": 64, "ocr": 32, "judge": 128}


@dataclass
class EvalArgs:
    data: str = field(
        metadata={"help": "Dataset directory (toy world) or file (POPE/CHAIR JSONL, MMHal JSON)."}
    )
    out: str | None = field(default=None, metadata={"help": "Report directory (default: beside --config)."})
    image_dir: str | None = field(default=None, metadata={"help": "Image directory (default: the data's)."})
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model name at --base-url (default: the one it serves), or a model directory to load "
            "in-process (default: the embedded model)."
        },
    )
    base_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."}
    )
    api_key: str | None = field(
        default=None, metadata={"help": "API key (default: $OPENAI_API_KEY or EMPTY)."}
    )
    concurrency: int = field(default=4, metadata={"help": "Questions in flight at once (endpoint runs)."})
    batch_size: int = field(
        default=16, metadata={"help": "Questions per forward pass (in-process runs; 1: one at a time)."}
    )
    max_retries: int = field(
        default=4, metadata={"help": "Retries per request on 429/5xx/connection errors."}
    )
    timeout: float = field(default=120.0, metadata={"help": "Seconds per request."})
    max_tokens: int | None = field(
        default=None, metadata={"help": "Answer token budget (default per benchmark)."}
    )
    blind: bool = field(default=False, metadata={"help": "Also ask every question without its image."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N questions."})
    device: str = field(default="auto", metadata={"help": "In-process device: cpu, cuda or auto."})
    suffix: str = field(default="", metadata={"help": "Text appended to every question."})
    ocr: str = field(
        default="off",
        metadata={
            "help": "OCR hints: off, on or auto (the service's `ocr` option; in-process, the same reader and "
            "placement). Answers with hints are cached apart."
        },
    )
    categories: list[str] = field(
        default_factory=lambda: ["random", "popular", "adversarial"], metadata={"help": "POPE categories."}
    )
    vocabulary: str = field(
        default="toyworld", metadata={"help": "CHAIR object vocabulary: toyworld or coco."}
    )
    prompt: str = field(default=CHAIR_PROMPT, metadata={"help": "CHAIR description prompt (pinned)."})
    judge_base_url: str | None = field(default=None, metadata={"help": "Judge endpoint (judge benchmark)."})
    judge_model: str | None = field(default=None, metadata={"help": "Judge model name at --judge-base-url."})
    judge_api_key: str | None = field(default=None, metadata={"help": "Judge API key (default: --api-key)."})

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("data is required; pass --data DIR_OR_FILE")
        for name in ("concurrency", "batch_size", "max_retries"):
            if getattr(self, name) < (0 if name == "max_retries" else 1):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.ocr not in OCR_MODES:
            raise ConfigError(f"ocr must be one of {list(OCR_MODES)}, got {self.ocr!r}")
        if bool(self.judge_base_url) != bool(self.judge_model):
            raise ConfigError("give both --judge-base-url and --judge-model, or neither")
        if self.vocabulary not in ("toyworld", "coco"):
            raise ConfigError(
                f"unknown CHAIR vocabulary {self.vocabulary!r}; choose from ['coco', 'toyworld']"
            )
        self.api_key = self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.judge_api_key = self.judge_api_key or self.api_key

    def tokens(self, benchmark: str) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS[benchmark]

    def public(self) -> dict[str, Any]:
        """The arguments as recorded in reports, without secrets."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("api_key", "judge_api_key"):
            d[key] = "<set>" if d[key] not in (None, "EMPTY") else d[key]
        return d


def load_args(config: str | Path | None, overrides: dict[str, Any]) -> EvalArgs:
    """YAML values first, then the command-line values that were given (not None)."""
    values: dict[str, Any] = {}
    if config:
        path = Path(config)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the config {path}; give a readable YAML file") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a YAML mapping of argument names to values")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(EvalArgs)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown eval arguments {unknown}; choose from {sorted(known)}")
    if "data" not in values:
        raise ConfigError("data is required; pass --data DIR_OR_FILE or set data: in the config")
    return EvalArgs(**values)
