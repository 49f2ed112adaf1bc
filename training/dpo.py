"""Stage 3, preference tuning: DPO on image preference pairs (chosen grounded, rejected hallucinated), full or LoRA.

    accelerate launch --config_file configs/accelerate/cpu.yaml training/dpo.py --config configs/toy/dpo.yaml

The reference model is explicit: a second, frozen copy of the starting model for full DPO, or the base model with
the adapter switched off for LoRA (PEFT), never a hub id guessed by TRL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModelForImageTextToText, set_seed
from trl import DPOConfig, DPOTrainer, ModelConfig, TrlParser

from assistant.qformer import expose_backbone
from training.common import (
    AtomicCheckpointMixin,
    DataArgs,
    load_model_for_training,
    lora_config,
    resume_checkpoint,
    save_final,
    setup_logging,
)
from training.data import load_preference_dataset

log = logging.getLogger(__name__)


@dataclass
class DPOScriptArgs(DataArgs):
    pass


class AtomicDPOTrainer(AtomicCheckpointMixin, DPOTrainer):
    pass


def main(script: DPOScriptArgs, train: DPOConfig, model_args: ModelConfig) -> Path:
    set_seed(train.seed)
    model, processor = load_model_for_training(model_args, script)
    ref_model = None
    if not model_args.use_peft:
        ref_model = AutoModelForImageTextToText.from_pretrained(
            model_args.model_name_or_path, dtype=model.dtype
        )
        expose_backbone(ref_model.requires_grad_(False).eval())
    dataset, report = load_preference_dataset(
        script.dataset, script.image_root, script.max_skip_share, script.max_samples
    )
    report.save(train.output_dir)
    trainer = AtomicDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=train,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(model_args) if model_args.use_peft else None,
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(train.output_dir, train.resume_from_checkpoint))
    out = save_final(trainer, processor, train.output_dir, peft=model_args.use_peft)
    log.info("stage 3 done: %s (%d pairs, %d skipped)", out, report.kept, report.skipped)
    return out


if __name__ == "__main__":
    setup_logging()
    main(*TrlParser((DPOScriptArgs, DPOConfig, ModelConfig)).parse_args_and_config())
