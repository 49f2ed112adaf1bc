"""Merge LoRA/DoRA adapters into their base model and export one directory that loads in transformers and
carries every field `vllm serve` needs.

    python training/merge.py --adapter runs/sft_lora --out models/merged
    python training/merge.py --adapter runs/sft_lora --base models/stage1 --out models/merged

The base model is read from the adapter's own `adapter_config.json` unless given; nothing depends on folder names.
A QLoRA adapter is merged into the full-precision base (the usual way: merging into 4-bit weights loses precision).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText

from assistant.errors import ConfigError, ModelLoadError
from assistant.modeling import save_model
from assistant.processing import load_processor

log = logging.getLogger(__name__)


@dataclass
class MergeArgs:
    adapter: str = field(metadata={"help": "Directory with adapter_config.json and adapter weights."})
    out: str = field(metadata={"help": "Output directory for the merged model."})
    base: str | None = field(
        default=None, metadata={"help": "Base model dir (default: from adapter_config.json)."}
    )
    dtype: str = field(
        default="float32", metadata={"help": "float32, bfloat16 or float16 for the saved weights."}
    )

    def __post_init__(self) -> None:
        if not (Path(self.adapter) / "adapter_config.json").is_file():
            raise ConfigError(
                f"{self.adapter!r} has no adapter_config.json; give the output directory of a LoRA run"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


def main(args: MergeArgs) -> Path:
    from peft import PeftModel

    base = (
        args.base
        or json.loads((Path(args.adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]
    )
    if not base or not (Path(base) / "config.json").is_file() and Path(base).is_absolute():
        raise ModelLoadError(f"the adapter's base model {base!r} is not there; pass --base DIR")
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=getattr(torch, args.dtype))
    merged = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    processor_source = args.adapter if (Path(args.adapter) / "processor_config.json").is_file() else base
    processor = load_processor(processor_source)
    out = save_model(merged, processor, args.out)
    log.info("merged %s into %s -> %s", args.adapter, base, out)
    return out


def parse_args(argv: list[str] | None = None) -> MergeArgs:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--base")
    parser.add_argument("--dtype", default="float32")
    return MergeArgs(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_args())
