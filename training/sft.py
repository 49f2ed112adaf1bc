"""Stage 2, visual instruction tuning: full fine-tuning of LLM + connector, LoRA/DoRA, or QLoRA (4/8-bit).

    accelerate launch --config_file configs/accelerate/cpu.yaml training/sft.py --config configs/toy/sft.yaml
    python training/sft.py --config configs/toy/sft_lora.yaml --num_train_epochs 2      # overrides win

Loss on assistant tokens only (the chat template's {% generation %} marks them); image tokens are never truncated
(max_length null); multi-turn and multi-image samples work as they come.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import set_seed
from trl import ModelConfig, SFTConfig, TrlParser

from training.common import (
    DataArgs,
    load_model_for_training,
    lora_config,
    make_stage_trainer,
    resume_checkpoint,
    save_final,
)
from training.data import load_sft_dataset

log = logging.getLogger(__name__)


@dataclass
class SFTScriptArgs(DataArgs):
    pass


def check_config(train: SFTConfig) -> None:
    if train.max_length is not None:
        log.warning(
            "max_length=%s may cut image tokens out of long samples; null is safe for VLMs", train.max_length
        )


def main(script: SFTScriptArgs, train: SFTConfig, model_args: ModelConfig) -> Path:
    set_seed(train.seed)
    check_config(train)
    model, processor = load_model_for_training(model_args, script)
    dataset, report = load_sft_dataset(
        script.dataset, script.image_root, script.max_skip_share, script.max_samples
    )
    report.save(train.output_dir)
    trainer = make_stage_trainer(
        model,
        processor,
        script,
        args=train,
        train_dataset=dataset,
        peft_config=lora_config(model_args) if model_args.use_peft else None,
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(train.output_dir, train.resume_from_checkpoint))
    out = save_final(trainer, processor, train.output_dir, peft=model_args.use_peft)
    log.info("stage 2 done: %s (%d samples, %d skipped)", out, report.kept, report.skipped)
    return out


if __name__ == "__main__":
    main(*TrlParser((SFTScriptArgs, SFTConfig, ModelConfig)).parse_args_and_config())
