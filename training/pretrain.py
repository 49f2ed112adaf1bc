"""Stage 1, feature alignment: vision tower and LLM frozen, only the connector trained, on captions.

    accelerate launch --config_file configs/accelerate/cpu.yaml training/pretrain.py --config configs/toy/pretrain.yaml

The model is assembled here from a vision tower and a causal LM (hub ids or local directories, e.g. stage 0's
output) with `assistant.modeling.build_model`, or continued from an existing model directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed
from trl import ModelConfig, SFTConfig, TrlParser

from assistant.errors import ConfigError
from assistant.modeling import CONNECTORS, ModelSpec, build_model, save_model
from training.common import (
    DataArgs,
    load_model_for_training,
    make_stage_trainer,
    resume_checkpoint,
    save_final,
    setup_logging,
)
from training.data import load_sft_dataset

log = logging.getLogger(__name__)


@dataclass
class PretrainScriptArgs(DataArgs):
    vision: str | None = field(
        default=None, metadata={"help": "Vision tower (hub id or dir) to assemble from."}
    )
    language: str | None = field(
        default=None, metadata={"help": "Causal LM (hub id or dir) to assemble from."}
    )
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer (default: the LM's)."})
    connector: str = field(default="mlp2x_gelu", metadata={"help": f"Connector kind: {sorted(CONNECTORS)}."})
    max_tiles: int | None = field(
        default=4, metadata={"help": "AnyRes tiles per image; null: fixed resolution."}
    )
    image_grid_pinpoints: list[list[int]] | None = field(
        default=None, metadata={"help": "Explicit AnyRes grids."}
    )
    vision_feature_layer: int = field(
        default=-2, metadata={"help": "Vision tower layer the connector reads."}
    )
    num_query_tokens: int = field(default=32, metadata={"help": "qformer: query tokens per image."})
    qformer_layers: int = field(default=2, metadata={"help": "qformer: transformer layers."})
    qformer_hidden: int | None = field(
        default=None, metadata={"help": "qformer: width (default: the tower's)."}
    )
    qformer_heads: int | None = field(
        default=None, metadata={"help": "qformer: heads (default: the tower's)."}
    )
    qformer_image_size: int | None = field(
        default=None, metadata={"help": "qformer: image side the tower reads (default: the tower's)."}
    )
    qformer_init: str | None = field(
        default=None,
        metadata={
            "help": "qformer: start from the Q-Former pretrained by training/stage0/qformer.py (a directory)."
        },
    )
    train_parts: list[str] = field(default_factory=lambda: ["connector"], metadata={"help": "Trained parts."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.vision) != bool(self.language):
            raise ConfigError(
                "give both --vision and --language to assemble a model, or neither with --model_name_or_path"
            )


def assemble(script: PretrainScriptArgs, out: Path, seed: int) -> str:
    """Build the starting model from its parts into `out` (reused on resume), loaded then like any other model."""
    if (out / "config.json").is_file():
        return str(out)
    spec = ModelSpec(
        vision=script.vision,
        language=script.language,
        tokenizer=script.tokenizer,
        connector=script.connector,
        max_tiles=script.max_tiles,
        image_grid_pinpoints=script.image_grid_pinpoints,
        vision_feature_layer=script.vision_feature_layer,
        num_query_tokens=script.num_query_tokens,
        qformer_layers=script.qformer_layers,
        qformer_hidden=script.qformer_hidden,
        qformer_heads=script.qformer_heads,
        qformer_image_size=script.qformer_image_size,
        qformer_init=script.qformer_init,
        seed=seed,
    )
    model, processor = build_model(spec)
    save_model(model, processor, out)
    return str(out)


def main(script: PretrainScriptArgs, train: SFTConfig, model_args: ModelConfig) -> Path:
    set_seed(train.seed)
    if script.vision:
        if model_args.model_name_or_path:
            raise ConfigError(
                "give either --vision/--language (assemble) or --model_name_or_path (continue), not both"
            )
        with train.main_process_first(desc="assembling the model"):  # the others then load what it wrote
            model_args.model_name_or_path = assemble(script, Path(train.output_dir) / "assembled", train.seed)
    model, processor = load_model_for_training(model_args, script)
    dataset, report = load_sft_dataset(
        script.dataset, script.image_root, script.max_skip_share, script.max_samples
    )
    if train.process_index == 0:
        report.save(train.output_dir)
    trainer = make_stage_trainer(model, processor, script, args=train, train_dataset=dataset)
    trainer.train(resume_from_checkpoint=resume_checkpoint(train.output_dir, train.resume_from_checkpoint))
    out = save_final(trainer, processor, train.output_dir, peft=False)
    log.info("stage 1 done: %s", out)
    return out


if __name__ == "__main__":
    setup_logging()
    main(*TrlParser((PretrainScriptArgs, SFTConfig, ModelConfig)).parse_args_and_config())
