"""Stage 2, visual instruction tuning: full fine-tuning of LLM + connector, LoRA/DoRA, or QLoRA (4/8-bit).

    accelerate launch --config_file configs/accelerate/cpu.yaml training/sft.py --config configs/toy/sft.yaml
    python training/sft.py --config configs/toy/sft_lora.yaml --num_train_epochs 2      # overrides win

Loss on assistant tokens only (the chat template's {% generation %} marks them); image tokens are never truncated
(max_length null); multi-turn and multi-image samples work as they come.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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
    setup_logging,
)
from training.data import load_sft_dataset
from training.skill_check import SkillCheck, load_check_questions

log = logging.getLogger(__name__)


@dataclass
class SFTScriptArgs(DataArgs):
    skill_check_data: str | None = field(
        default=None,
        metadata={
            "help": "A toy-world eval set (qa.jsonl and images) the model answers every skill_check_every steps "
            "(training/skill_check.py); its scores go to skill_check.jsonl in output_dir."
        },
    )
    skill_check_tasks: list[str] = field(
        default_factory=list, metadata={"help": "The set's tasks to ask (default: all)."}
    )
    skill_check_answer_types: list[str] = field(
        default_factory=list,
        metadata={
            "help": "The set's answer types to ask (default: all; e.g. relation yes_no for position's relations)."
        },
    )
    skill_check_limit: int = field(default=200, metadata={"help": "Questions per check: the set's first N."})
    skill_check_every: int = field(default=200, metadata={"help": "Steps between checks."})
    skill_check_stop_at: float | None = field(
        default=None,
        metadata={
            "help": "Stop the stage once a check scores this much (the skill has formed); the stage's epochs are "
            "then the most it runs. None: record the scores only."
        },
    )
    skill_check_patience: int = field(
        default=0,
        metadata={
            "help": "Stop the stage once this many checks in a row have not beaten the best before them by "
            "skill_check_min_delta (the skill has levelled off). 0: off."
        },
    )
    skill_check_min_delta: float = field(default=0.01, metadata={"help": "See skill_check_patience."})


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
    if train.process_index == 0:
        report.save(train.output_dir)
    trainer = make_stage_trainer(
        model,
        processor,
        script,
        args=train,
        train_dataset=dataset,
        peft_config=lora_config(model_args) if model_args.use_peft else None,
    )
    if script.skill_check_data:
        questions = load_check_questions(
            script.skill_check_data,
            script.skill_check_tasks,
            script.skill_check_limit,
            script.skill_check_answer_types,
        )
        trainer.add_callback(
            SkillCheck(
                questions,
                processor,
                script.skill_check_every,
                script.skill_check_stop_at,
                train.output_dir,
                script.skill_check_patience,
                script.skill_check_min_delta,
            )
        )
    trainer.train(resume_from_checkpoint=resume_checkpoint(train.output_dir, train.resume_from_checkpoint))
    out = save_final(trainer, processor, train.output_dir, peft=model_args.use_peft)
    log.info("stage 2 done: %s (%d samples, %d skipped)", out, report.kept, report.skipped)
    return out


if __name__ == "__main__":
    setup_logging()
    main(*TrlParser((SFTScriptArgs, SFTConfig, ModelConfig)).parse_args_and_config())
