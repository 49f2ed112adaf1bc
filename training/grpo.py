"""Stage 3b, reinforcement learning: GRPO on image prompts with rewards from each scene's ground truth.

    accelerate launch --config_file configs/accelerate/cpu.yaml training/grpo.py --config configs/toy/grpo.yaml

For every prompt the policy samples `num_generations` answers; each is scored by `training/rewards.py` (short
questions: the skill-VQA parser against the answer; descriptions: object precision and recall against the scene;
plus a small format term), and the group's rewards, centred on their mean, weight each answer's log-likelihood
(TRL's GRPOTrainer). Full or LoRA/QLoRA like the other stages; with `beta` > 0 the KL reference is the starting
model (LoRA: the adapter switched off). Data: `assistant toyworld generate --task rl` writes `prompts.jsonl`; for
real data, rows of `prompt`, `images` and `answer` + `answer_type` (training/data.py: load_prompt_dataset).

`--anchor_dataset DIR --anchor_weight W` adds, at every step, W x the supervised loss on a batch of conversations
from DIR (the stage-2 data): InstructGPT's PPO-ptx. GRPO on descriptions moves the short answers too (existence,
counting and POPE F1 fell in every arm that cut hallucinations by half; docs/recipe.md); the anchor holds them to the
ground truth they were trained on while the descriptions move.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import TrainerCallback, set_seed
from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser

from assistant.errors import ConfigError
from assistant.inference import Assistant
from training.common import (
    AtomicCheckpointMixin,
    DataArgs,
    load_model_for_training,
    lora_config,
    resume_checkpoint,
    save_final,
    setup_logging,
)
from training.data import load_prompt_dataset, load_sft_dataset
from training.rewards import answer_errs, grpo_reward_functions

log = logging.getLogger(__name__)


@dataclass
class GRPOScriptArgs(DataArgs):
    format_weight: float = field(
        default=0.2, metadata={"help": "Weight of the format reward (the grounded reward has weight 1)."}
    )
    recall_weight: float = field(
        default=0.5,
        metadata={
            "help": "Descriptions: weight of object recall against precision in the grounded reward (0-1)."
        },
    )
    count_penalty: float = field(
        default=0.0,
        metadata={
            "help": "Descriptions: share of the reward lost when the stated number of objects is wrong (0-1)."
        },
    )
    relation_weight: float = field(
        default=0.0,
        metadata={
            "help": "Descriptions: weight of their relation sentences being right, checked on the prompt's "
            "`layout` (0-1; 0: not checked)."
        },
    )
    claim_penalty: float = field(
        default=0.0,
        metadata={
            "help": "Descriptions: share of the reward lost per wrong claim beyond the objects: a relation sentence "
            "that does not hold on the prompt's `layout`, a quoted text not in its `texts` (0-1; 0: off). Unlike "
            "relation_weight, two wrong relations cost more than one."
        },
    )
    object_penalty: float = field(
        default=0.0,
        metadata={
            "help": "Descriptions: share of the reward lost per mention of an object the scene lacks (0-1; 0: off). "
            "Precision alone charges an invented object little beside a wrong relation sentence (session 28)."
        },
    )
    charge_unended: bool = field(
        default=False,
        metadata={
            "help": "Format reward -1 for an answer cut at max_completion_length (it never ended). TRL's "
            "mask_truncated_completions leaves those answers out of the loss, so nothing pushes a run-on answer "
            "back: turn it off for the charge to reach them (session 18, docs/recipe.md: one seed's descriptions "
            "became endless lists by step 300)."
        },
    )
    kl_target: float = field(
        default=0.0,
        metadata={
            "help": "Stop once the KL to the reference, averaged over the last kl_window logs, reaches this "
            "(0: run max_steps; needs beta > 0, which makes TRL compute the KL)."
        },
    )
    kl_window: int = field(default=4, metadata={"help": "Logged steps the kl_target averages over."})
    anchor_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Conversations (SFT format, e.g. the stage-2 data) whose supervised loss is added at every "
            "step, weighted by anchor_weight (InstructGPT's PPO-ptx); none: GRPO alone."
        },
    )
    anchor_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the anchor's supervised loss (0: off, anchor_dataset unread)."},
    )
    anchor_batch_size: int = field(default=4, metadata={"help": "Anchor conversations per step."})
    hard_samples: int = field(
        default=0,
        metadata={
            "help": "Before training, sample this many answers per prompt from the starting model (at the run's "
            "temperature and completion length) and train only on the prompts where one of them errs: a "
            "description that names an object the scene lacks, a short answer the evals score wrong (0: every "
            "prompt). The kept prompts are written to output_dir/hard_prompts.json, which a resumed run reads."
        },
    )


class AtomicGRPOTrainer(AtomicCheckpointMixin, GRPOTrainer):
    """GRPO with atomic checkpoints and, when `anchor` is set, an anchor: `anchor_weight` x the supervised loss of
    a batch of anchor conversations, added to every loss GRPO computes (logged as `anchor_loss`)."""

    anchor: Anchor | None = None
    anchor_weight: float = 0.0
    _anchor_at: tuple[int, int] = (-1, 0)  # (global step, losses computed in it)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.anchor is None or not model.training:
            return loss
        step, calls = self._anchor_at
        calls = calls + 1 if step == self.state.global_step else 0
        self._anchor_at = (self.state.global_step, calls)
        batch = self.anchor.batch(self.state.global_step * self.args.gradient_accumulation_steps + calls)
        batch = {k: v.to(loss.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        anchor_loss = model(**batch).loss
        self._metrics["train"]["anchor_loss"].append(anchor_loss.item())
        return loss + self.anchor_weight * anchor_loss


class Anchor:
    """The anchor conversations, collated as stage 2 collates them (TRL's VLM collator, loss on the assistant turns
    only). Batch k of the run is a function of (seed, k) alone, so a resumed run sees the batches the uninterrupted
    run saw: each pass over the data is a fresh permutation."""

    def __init__(self, script: GRPOScriptArgs, processor, seed: int) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.dataset, report = load_sft_dataset(
            script.anchor_dataset, script.image_root, script.max_skip_share
        )
        if len(self.dataset) < script.anchor_batch_size:
            raise ConfigError(
                f"anchor_dataset {script.anchor_dataset} has {len(self.dataset)} usable conversations, fewer than "
                f"anchor_batch_size {script.anchor_batch_size}"
            )
        log.info(
            "anchor: %d conversations from %s (%d skipped)",
            report.kept,
            script.anchor_dataset,
            report.skipped,
        )
        self.collate = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)
        self.size, self.seed = script.anchor_batch_size, seed
        self.per_pass = len(self.dataset) // self.size

    def batch(self, k: int) -> dict:
        """Batch k: slot k % per_pass of pass k // per_pass's permutation."""
        order = torch.randperm(
            len(self.dataset), generator=torch.Generator().manual_seed(self.seed + k // self.per_pass)
        )
        start = (k % self.per_pass) * self.size
        return self.collate([self.dataset[i] for i in order[start : start + self.size].tolist()])


class StopAtKL(TrainerCallback):
    """Stop training once the KL to the reference, averaged over the last `window` logs, reaches `target`.

    With a fixed number of steps, four seeds of one config drifted to a KL of 0.009-0.042 and their cut in
    hallucinated objects followed it (-17% to -67% CHAIR_i; docs/recipe.md): a KL target makes a run move as far
    from the SFT model as asked, whatever its seed."""

    def __init__(self, target: float, window: int) -> None:
        self.target, self.window, self.recent = target, window, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "kl" in logs:
            self.recent = [*self.recent, float(logs["kl"])][-self.window :]
            mean = sum(self.recent) / len(self.recent)
            if len(self.recent) == self.window and mean >= self.target:
                log.info(
                    "KL %.4f reached the target %.4f at step %d: stopping",
                    mean,
                    self.target,
                    state.global_step,
                )
                control.should_training_stop = True
        return control


def end_ids(model, processor) -> set[int]:
    """The tokens an answer can end on, as TRL's GRPOTrainer counts them: the generation config's EOS ids, the
    tokenizer's EOS and its pad."""
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = model.generation_config.eos_token_id
    ids = set([ids] if isinstance(ids, int) else ids or [])
    return ids | {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}


def main(
    script: GRPOScriptArgs, train: GRPOConfig, model_args: ModelConfig, reward_funcs: list | None = None
) -> Path:
    """Train; `reward_funcs` replaces the grounded + format rewards (TRL's signature), e.g. a judge's."""
    set_seed(train.seed)
    model, processor = load_model_for_training(model_args, script)
    dataset, report = load_prompt_dataset(
        script.dataset, script.image_root, script.max_skip_share, script.max_samples
    )
    report.save(train.output_dir)
    relations_checked = script.relation_weight > 0 or script.claim_penalty > 0
    if relations_checked and all(layout == "[]" for layout in dataset["layout"]):
        raise ConfigError(
            f"relation_weight {script.relation_weight} / claim_penalty {script.claim_penalty} need prompts with a "
            f"`layout` (each object's shape, colour, size and box); {script.dataset} has none: regenerate it "
            "(`assistant toyworld generate --task rl_detail ...` writes one) or set both to 0"
        )
    if script.kl_target > 0 and train.beta <= 0:
        raise ConfigError(f"kl_target {script.kl_target} needs beta > 0 (TRL computes the KL only then)")
    if script.kl_window < 1:
        raise ConfigError(f"kl_window must be >= 1, got {script.kl_window}")
    if (script.anchor_weight > 0 and not script.anchor_dataset) or script.anchor_weight < 0:
        raise ConfigError(
            f"the anchor needs both anchor_dataset and anchor_weight > 0 (got {script.anchor_dataset!r}, "
            f"{script.anchor_weight}); give both, or anchor_weight 0 for GRPO alone"
        )
    if script.anchor_dataset and script.anchor_weight == 0:
        log.info(
            "anchor off (anchor_weight 0): %s is not read; set anchor_weight to use it", script.anchor_dataset
        )
    if script.hard_samples > 0:
        dataset = hard_prompts(model, processor, dataset, script.hard_samples, train)
    if reward_funcs is None:
        reward_funcs = grpo_reward_functions(
            script.recall_weight,
            script.count_penalty,
            script.relation_weight,
            script.claim_penalty,
            end_ids(model, processor) if script.charge_unended else (),
            script.object_penalty,
        )
        train.reward_weights = [1.0, script.format_weight]
    train.remove_unused_columns = False  # the rewards read the ground-truth columns
    trainer = AtomicGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=train,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(model_args) if model_args.use_peft else None,
        callbacks=[StopAtKL(script.kl_target, script.kl_window)] if script.kl_target > 0 else None,
    )
    if script.anchor_weight > 0:
        trainer.anchor, trainer.anchor_weight = (
            Anchor(script, processor, train.seed),
            script.anchor_weight,
        )
    trainer.train(resume_from_checkpoint=resume_checkpoint(train.output_dir, train.resume_from_checkpoint))
    out = save_final(trainer, processor, train.output_dir, peft=model_args.use_peft)
    plot_rewards(trainer.state.log_history, Path(train.output_dir) / "reward_curve.png")
    log.info("stage 3b (GRPO) done: %s (%d prompts, %d skipped)", out, report.kept, report.skipped)
    return out


def hard_prompts(model, processor, dataset, samples: int, train: GRPOConfig):
    """The prompts of `dataset` where one of `samples` answers the model samples errs (`answer_errs`). A prompt whose every
    answer is right gives the group nothing to rank on hallucination; the selection is saved to
    output_dir/hard_prompts.json and read back on resume, so a resumed run trains on the same prompts."""
    saved = Path(train.output_dir) / "hard_prompts.json"
    if saved.is_file():
        kept = json.loads(saved.read_text())["kept"]
        log.info("hard prompts: %d of %d, read from %s", len(kept), len(dataset), saved)
        return dataset.select(kept)
    torch.manual_seed(train.seed)
    kept, wrong = [], 0
    was_training = model.training
    assistant = Assistant(model, processor)  # the served prompt format; puts the model in eval mode
    for i, row in enumerate(tqdm(dataset, desc=f"hard prompts ({samples} answers each)", unit="prompt")):
        inputs = assistant.prepare(row["prompt"], row["images"])
        with torch.inference_mode():
            ids = model.generate(
                **inputs,
                do_sample=True,
                temperature=train.temperature,
                max_new_tokens=train.max_completion_length,
                num_return_sequences=samples,
            )
        answers = assistant.tokenizer.batch_decode(
            ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        truth = {
            "answer": row["answer"],
            "answer_type": row["answer_type"],
            "objects": json.loads(row["objects"]),
        }
        bad = sum(answer_errs(answer, truth) for answer in answers)
        wrong += bad
        if bad:
            kept.append(i)
    model.train(was_training)
    if not kept:
        log.warning(
            "hard prompts: none of %d prompts got a wrong answer in %d samples, so there is nothing to select on; "
            "training on all of them (give harder prompts, or set hard_samples 0 to skip the sampling)",
            len(dataset),
            samples,
        )
        kept = list(range(len(dataset)))
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(
        json.dumps({"samples": samples, "of": len(dataset), "wrong_answers": wrong, "kept": kept})
    )
    log.info(
        "hard prompts: %d of %d (%d of %d sampled answers err)",
        len(kept),
        len(dataset),
        wrong,
        samples * len(dataset),
    )
    return dataset.select(kept)


def plot_rewards(history: list[dict], path: Path) -> Path | None:
    """Mean reward per reward function and the KL to the reference, against the step (also in TensorBoard)."""
    rows = [h for h in history if "reward" in h]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in sorted({k for h in rows for k in h if k.startswith("rewards/") and k.endswith("/mean")}):
        left.plot(steps, [h.get(key) for h in rows], label=key.split("/")[1])
    left.plot(steps, [h["reward"] for h in rows], label="weighted sum", color="black", linewidth=1)
    left.set(xlabel="step", ylabel="mean reward", title="GRPO rewards")
    left.legend(fontsize=8)
    right.plot(steps, [h.get("kl", 0.0) for h in rows], color="tab:red")
    right.set(xlabel="step", ylabel="KL to reference", title="KL")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    setup_logging()
    main(*TrlParser((GRPOScriptArgs, GRPOConfig, ModelConfig)).parse_args_and_config())
