"""Stages 1-3 and merge, for real: a tiny LLaVA-NeXT trained a few steps on toy-world data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText
from trl import DPOConfig, ModelConfig, SFTConfig

from tests.training.conftest import train_config
from training import dpo, merge, pretrain, sft


def losses(out: Path) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def weights(path: Path) -> dict[str, torch.Tensor]:
    """The saved tensors; transformers writes the checkpoint layout vLLM reads (`language_model.model...`)."""
    return load_file(path / "model.safetensors")


def changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


@pytest.mark.parametrize("parts", [["connector"], ["connector", "language_model"]])
def test_pretrain_assembles_from_parts_and_trains_only_the_parts_named(
    tmp_path, toy_data, tiny_model_dir, parts
):
    """LLaVA's stage 1 trains the connector alone; the toy recipe trains the from-scratch LM too (docs/recipe.md)."""
    # the parts, saved as hub-style directories
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    from transformers import AutoProcessor, LlamaConfig, LlamaForCausalLM

    model.model.vision_tower.save_pretrained(tmp_path / "vision")
    lm = LlamaForCausalLM(LlamaConfig(**model.config.text_config.to_dict()))
    lm.model.load_state_dict(model.model.language_model.state_dict())
    lm.save_pretrained(tmp_path / "lm")
    AutoProcessor.from_pretrained(tiny_model_dir).tokenizer.save_pretrained(tmp_path / "lm")

    out = pretrain.main(
        pretrain.PretrainScriptArgs(
            dataset=str(toy_data["caption"]),
            vision=str(tmp_path / "vision"),
            language=str(tmp_path / "lm"),
            image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]],
            train_parts=parts,
        ),
        train_config(SFTConfig, tmp_path / "stage1", max_steps=8, learning_rate=1e-2),
        ModelConfig(),
    )
    before, after = weights(out / "assembled"), weights(out)
    assert changed(before, after, "multi_modal_projector.")
    assert changed(before, after, "language_model.") == ("language_model" in parts)
    assert not changed(before, after, "vision_tower.")
    history = losses(out)
    assert min(history[-3:]) < history[0]


def test_sft_full_lowers_the_loss_and_changes_the_llm_not_the_vision_tower(
    tmp_path, toy_data, tiny_model_dir
):
    out = sft.main(
        sft.SFTScriptArgs(dataset=str(toy_data["instruct"]), max_samples=8),
        train_config(SFTConfig, tmp_path / "sft", max_steps=12),
        ModelConfig(model_name_or_path=str(tiny_model_dir)),
    )
    before, after = weights(tiny_model_dir), weights(out)
    assert changed(before, after, "language_model.")
    assert changed(before, after, "multi_modal_projector.")
    assert not changed(before, after, "vision_tower.")
    history = losses(out)
    assert sum(history[-3:]) / 3 < history[0], history
    assert json.loads((out / "data_report.json").read_text())["skipped"] == 0


@pytest.mark.parametrize("variant", ["lora", "dora", "qlora"])
def test_adapters_train_and_merge_into_a_loadable_model(
    tmp_path, toy_data, tiny_model_dir, red_image, variant
):
    model_args = ModelConfig(
        model_name_or_path=str(tiny_model_dir),
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        use_dora=variant == "dora",
        load_in_4bit=variant == "qlora",
    )
    out = sft.main(
        sft.SFTScriptArgs(dataset=str(toy_data["instruct"]), max_samples=8),
        train_config(SFTConfig, tmp_path / variant, max_steps=3),
        model_args,
    )
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(float(v.float().abs().sum()) > 0 for v in lora_b)  # B starts at zero: it trained

    merged = merge.main(merge.MergeArgs(adapter=str(out), out=str(tmp_path / f"{variant}-merged")))
    assert changed(weights(tiny_model_dir), weights(merged), "language_model.")
    from assistant.inference import Assistant

    answer = Assistant.load(merged).chat(
        [{"role": "user", "content": "hi"}], images=[red_image], max_new_tokens=3
    )
    assert answer.completion_tokens >= 1


def test_dpo_with_an_explicit_reference_changes_the_policy(tmp_path, toy_data, tiny_model_dir):
    out = dpo.main(
        dpo.DPOScriptArgs(dataset=str(toy_data["preference"]), max_samples=8),
        train_config(DPOConfig, tmp_path / "dpo", max_steps=3, learning_rate=1e-2),
        ModelConfig(model_name_or_path=str(tiny_model_dir)),
    )
    assert changed(weights(tiny_model_dir), weights(out), "language_model.")
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("rewards/margins" in h for h in history)


def test_resume_continues_from_the_last_complete_checkpoint(tmp_path, toy_data, tiny_model_dir):
    args = sft.SFTScriptArgs(dataset=str(toy_data["instruct"]), max_samples=8)
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir))
    straight = sft.main(
        args, train_config(SFTConfig, tmp_path / "straight", max_steps=4, save_steps=2), model_args
    )

    resumed_dir = tmp_path / "resumed"
    sft.main(args, train_config(SFTConfig, resumed_dir, max_steps=2, save_steps=2), model_args)
    # a checkpoint write that was killed half-way leaves only a staging directory, which resume ignores
    (resumed_dir / ".staging" / "checkpoint-3").mkdir(parents=True)
    resumed = sft.main(
        args,
        train_config(SFTConfig, resumed_dir, max_steps=4, save_steps=2, resume_from_checkpoint="true"),
        model_args,
    )
    assert losses(resumed)[-2:] == pytest.approx(losses(straight)[-2:], rel=1e-4)
    assert sorted(p.name for p in resumed_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_a_missing_stage_directory_names_the_command_that_makes_it(toy_data, tmp_path):
    from assistant.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"'runs/nowhere/stage1' does not exist yet; make it first with `accelerate"
    ):
        sft.main(
            sft.SFTScriptArgs(dataset=str(toy_data["instruct"])),
            train_config(SFTConfig, tmp_path / "sft", max_steps=1),
            ModelConfig(model_name_or_path="runs/nowhere/stage1"),
        )
    from training.data import DataError

    with pytest.raises(DataError, match=r"dataset 'data/none/instruct' does not exist; check the path"):
        sft.main(
            sft.SFTScriptArgs(dataset="data/none/instruct"),
            train_config(SFTConfig, tmp_path / "sft2", max_steps=1),
            ModelConfig(model_name_or_path="default"),
        )


def test_vision_lr_scale_moves_the_tower_less_than_the_rest(tmp_path, toy_data, tiny_model_dir):
    """With the tower trainable at a tenth of the learning rate, Adam's steps on it are about a tenth as large."""

    def tower_step(scale: float, name: str) -> tuple[float, float]:
        out = sft.main(
            sft.SFTScriptArgs(
                dataset=str(toy_data["instruct"]),
                max_samples=8,
                train_parts=["vision_tower", "connector", "language_model"],
                vision_lr_scale=scale,
            ),
            train_config(SFTConfig, tmp_path / name, max_steps=4, learning_rate=1e-3),
            ModelConfig(model_name_or_path=str(tiny_model_dir)),
        )
        before, after = weights(tiny_model_dir), weights(out)

        def mean_change(prefix: str) -> float:
            keys = [k for k in before if k.startswith(prefix)]
            return sum(float((after[k] - before[k]).abs().mean()) for k in keys) / len(keys)

        return mean_change("vision_tower."), mean_change("multi_modal_projector.")

    tower_full, connector_full = tower_step(1.0, "full")
    tower_tenth, connector_tenth = tower_step(0.1, "tenth")
    assert tower_tenth > 0  # the tower trained ...
    assert tower_tenth < 0.3 * tower_full  # ... at about a tenth of the rate
    assert connector_tenth > 0.5 * connector_full  # the rest at the full rate


def test_vision_lr_scale_without_the_tower_trainable_is_refused():
    from assistant.errors import ConfigError

    with pytest.raises(ConfigError, match="needs vision_tower in train_parts"):
        sft.SFTScriptArgs(dataset="x", vision_lr_scale=0.1)


def test_the_gradient_filter_adds_its_gain_times_the_average_of_past_gradients():
    from training.grad_filter import GradientFilter

    layer = torch.nn.Linear(2, 1, bias=False)
    gradient_filter = GradientFilter(alpha=0.5, lam=2.0)
    filtered = []
    for gradient in ([1.0, 0.0], [0.0, 1.0]):
        layer.weight.grad = torch.tensor([gradient])
        gradient_filter.on_pre_optimizer_step(None, None, None, model=layer)
        filtered.append(layer.weight.grad[0].tolist())
    # step 1: the average is the gradient, so g + 2g; step 2: average 0.5 * [1, 0] + 0.5 * [0, 1]
    assert filtered == [[3.0, 0.0], [1.0, 2.0]]


def test_a_stage_with_the_gradient_filter_takes_other_steps_than_one_without(
    tmp_path, toy_data, tiny_model_dir
):
    """The filter is taken from the stage's arguments: the same steps move the weights differently with it on."""

    def trained(alpha: float, name: str) -> dict[str, torch.Tensor]:
        out = sft.main(
            sft.SFTScriptArgs(dataset=str(toy_data["instruct"]), max_samples=8, grad_filter_alpha=alpha),
            train_config(SFTConfig, tmp_path / name, max_steps=4, learning_rate=1e-3),
            ModelConfig(model_name_or_path=str(tiny_model_dir)),
        )
        return weights(out)

    before, plain, filtered = weights(tiny_model_dir), trained(0.0, "plain"), trained(0.9, "filtered")
    assert changed(before, filtered, "language_model.")
    assert changed(plain, filtered, "language_model.")
    assert not changed(before, filtered, "vision_tower.")


def test_a_gradient_filter_out_of_range_is_refused():
    from assistant.errors import ConfigError

    with pytest.raises(ConfigError, match=r"grad_filter_alpha must be in \(0, 1\)"):
        sft.SFTScriptArgs(dataset="x", grad_filter_alpha=1.5)
    with pytest.raises(ConfigError, match="grad_filter_lambda must be > 0"):
        sft.SFTScriptArgs(dataset="x", grad_filter_alpha=0.98, grad_filter_lambda=0.0)


def test_sample_lengths_count_text_and_image_tokens_close_to_the_processors(toy_data, tiny_model_dir):
    from assistant.inference import normalize_messages
    from assistant.processing import load_processor
    from training.common import sample_lengths
    from training.data import load_sft_dataset

    processor = load_processor(tiny_model_dir)
    dataset, _ = load_sft_dataset(str(toy_data["instruct"]))
    lengths = sample_lengths(dataset, processor)
    true = []
    for row in dataset:
        messages, images = normalize_messages(row["messages"], row["images"])
        text = processor.apply_chat_template(messages)
        true.append(int(processor(images=images, text=[text], return_tensors="pt")["input_ids"].shape[1]))
    # the estimate leaves out the chat template's own tokens (a few per turn) and nothing else
    gaps = [t - n for t, n in zip(true, lengths, strict=True)]
    assert all(0 <= gap <= 12 * len(row["messages"]) for gap, row in zip(gaps, dataset, strict=True))
    assert max(true) - min(true) > max(gaps) - min(gaps)  # the rows differ by more than the estimate errs


def test_group_by_length_batches_rows_of_like_length_and_trains(tmp_path, toy_data, tiny_model_dir):
    from training.common import load_model_for_training, make_stage_trainer
    from training.data import load_sft_dataset

    def trained(strategy: str):
        """The share of real tokens in the trainer's batches, and the trainer after 4 steps on them."""
        args = sft.SFTScriptArgs(dataset=str(toy_data["instruct"]))
        model, processor = load_model_for_training(ModelConfig(model_name_or_path=str(tiny_model_dir)), args)
        dataset, _ = load_sft_dataset(args.dataset)
        config = train_config(SFTConfig, tmp_path / strategy, max_steps=4, train_sampling_strategy=strategy)
        trainer = make_stage_trainer(model, processor, args, args=config, train_dataset=dataset)
        masks = [batch["attention_mask"] for batch in trainer.get_train_dataloader()]
        trainer.train()
        return sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks), trainer

    grouped_share, grouped = trained("group_by_length")
    random_share, plain = trained("random")
    assert grouped_share > random_share + 0.05
    # grouped, the loss divides by the mean answer tokens per batch so far, not the batch's own count (random: its own)
    assert grouped._batches == 4 and grouped._answer_tokens > 0
    assert plain._batches == 0 and plain._answer_tokens == 0
    out = sft.main(
        sft.SFTScriptArgs(dataset=str(toy_data["instruct"])),
        train_config(
            SFTConfig, tmp_path / "grouped", max_steps=12, train_sampling_strategy="group_by_length"
        ),
        ModelConfig(model_name_or_path=str(tiny_model_dir)),
    )
    assert changed(weights(tiny_model_dir), weights(out), "language_model.")
    history = losses(out)
    assert min(history[-3:]) < history[0]


def test_a_length_column_is_batched_as_sample_lengths_are(tmp_path, toy_data, tiny_model_dir):
    from training.common import ShuffledBatchesSampler, load_model_for_training, make_stage_trainer
    from training.data import load_sft_dataset

    args = sft.SFTScriptArgs(dataset=str(toy_data["instruct"]))
    model, processor = load_model_for_training(ModelConfig(model_name_or_path=str(tiny_model_dir)), args)
    dataset, _ = load_sft_dataset(args.dataset)
    dataset = dataset.add_column("length", [7 * (i % 5) + 1 for i in range(len(dataset))])
    config = train_config(SFTConfig, tmp_path / "out", max_steps=1, train_sampling_strategy="group_by_length")
    trainer = make_stage_trainer(model, processor, args, args=config, train_dataset=dataset)
    sampler = trainer._get_train_sampler()
    # not transformers' LengthGroupedSampler, whose sorted mega-batches cost recall (docs/recipe.md, session 29)
    assert isinstance(sampler, ShuffledBatchesSampler) and sampler.lengths == list(dataset["length"])


def test_shuffled_batches_keep_lengths_together_in_a_random_order():
    from training.common import ShuffledBatchesSampler

    torch.manual_seed(0)
    lengths = torch.randint(20, 500, (960,)).tolist()
    order = list(ShuffledBatchesSampler(16, lengths))
    assert sorted(order) == list(range(960))  # every row once
    batches = [[lengths[i] for i in order[k : k + 16]] for k in range(0, 960, 16)]
    real = sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)
    assert real > 0.9  # like lengths together: little padding (random batches: about 0.55)
    tops = [max(b) for b in batches]
    # not sorted within each stretch of mega-batches: long and short batches alternate
    assert sum(a > b for a, b in zip(tops[:-1], tops[1:], strict=True)) < 0.75 * len(tops)


def test_processes_of_a_distributed_run_draw_one_order_from_their_own_seeded_generator():
    from training.common import ShuffledBatchesSampler

    lengths = torch.randint(20, 500, (320,), generator=torch.Generator().manual_seed(0)).tolist()
    # one process: torch's global generator, as before (accelerate leaves a sampler without `generator` alone)
    assert not hasattr(ShuffledBatchesSampler(8, lengths), "generator")
    # each process's sampler, seeded alike, then the global generator of one moved on (as a process that ran other
    # batches moves it): the order is the same, and the next epoch's too
    rank0, rank1 = (ShuffledBatchesSampler(16, lengths, torch.Generator().manual_seed(3)) for _ in range(2))
    first = list(rank0)
    torch.rand(1000)
    assert list(rank1) == first and list(rank0) == list(rank1) != first
    assert sorted(first) == list(range(320))

    # grouped by the whole step's batch (16 over two processes of 8), the rows of a step are alike in length; grouped
    # by a process's share (as before session 53), a step joins two random groups and one process waits on the other
    def spread(batch_size: int) -> float:
        order = list(ShuffledBatchesSampler(batch_size, lengths, torch.Generator().manual_seed(3)))
        steps = [[lengths[i] for i in order[k : k + 16]] for k in range(0, 320, 16)]
        return sum(max(s) - min(s) for s in steps) / len(steps)

    assert spread(16) < 0.5 * spread(8)
