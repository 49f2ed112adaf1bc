"""Stage 3b (GRPO) for real: a tiny LLaVA-NeXT sampling answers to toy-world image prompts, a few steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl import GRPOConfig, ModelConfig

from assistant.errors import ConfigError
from tests.training.conftest import train_config
from training import grpo


@pytest.fixture(scope="module")
def rl_data(tmp_path_factory) -> Path:
    from assistant.toyworld import make_dataset

    return make_dataset(tmp_path_factory.mktemp("rl") / "rl", task="rl", n=8, seed=90)


@pytest.fixture(scope="module")
def anchor_data(tmp_path_factory) -> Path:
    from assistant.toyworld import make_dataset

    return make_dataset(tmp_path_factory.mktemp("anchor") / "instruct", task="instruct", n=8, seed=91)


def grpo_config(out: Path, **overrides) -> GRPOConfig:
    base = dict(num_generations=4, per_device_train_batch_size=8, max_completion_length=12, beta=0.0)
    return train_config(GRPOConfig, out, **{**base, **overrides})


def rewards(out: Path, key: str) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h[key] for h in history if key in h]


def e_share(prompts, completions, **_) -> list[float]:
    """A reward any policy can climb: the share of the letter e in the answer."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [t.count("e") / max(len(t), 1) for t in texts]


def test_grpo_raises_the_reward_and_trains_only_the_trained_parts(tmp_path, rl_data, tiny_model_dir):
    out = grpo.main(
        grpo.GRPOScriptArgs(dataset=str(rl_data)),
        grpo_config(tmp_path / "grpo", max_steps=10, learning_rate=2e-2, temperature=1.0),
        ModelConfig(model_name_or_path=str(tiny_model_dir)),
        reward_funcs=[e_share],
    )
    curve = rewards(out, "reward")
    assert len(curve) == 10
    assert (out / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(curve[-3:]) / 3 > sum(curve[:3]) / 3, curve
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("language_model."))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("vision_tower."))


def test_grpo_with_grounded_rewards_trains_only_the_adapter_and_skips_corrupt_images(
    tmp_path, rl_data, tiny_model_dir
):
    data = shutil.copytree(rl_data, tmp_path / "rl")
    (data / "images" / "000001.png").write_bytes(b"not a png")  # one corrupt image of eight
    out = grpo.main(
        grpo.GRPOScriptArgs(dataset=str(data), max_skip_share=0.2),
        grpo_config(tmp_path / "grpo", max_steps=2, learning_rate=1e-2),
        ModelConfig(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8),
    )
    report = json.loads((out / "data_report.json").read_text())
    assert (report["kept"], report["skipped"]) == (7, 1)
    assert rewards(out, "rewards/grounded/mean") and rewards(out, "rewards/format/mean")
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k for k in adapter)
    assert all(
        "language_model" in k or "multi_modal_projector" in k for k in adapter
    )  # never the vision tower


def test_grpo_resumes_from_its_last_checkpoint_and_reproduces_the_run(
    tmp_path, rl_data, anchor_data, tiny_model_dir
):
    # with an anchor: its batches are a function of the step, so the resumed run sees the same ones
    args = grpo.GRPOScriptArgs(dataset=str(rl_data), anchor_dataset=str(anchor_data), anchor_weight=0.5)
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir))
    straight = grpo.main(
        args,
        grpo_config(tmp_path / "straight", max_steps=4, save_steps=2, learning_rate=1e-2),
        model_args,
        [e_share],
    )
    resumed_dir = tmp_path / "resumed"
    grpo.main(
        args, grpo_config(resumed_dir, max_steps=2, save_steps=2, learning_rate=1e-2), model_args, [e_share]
    )
    resumed = grpo.main(
        args,
        grpo_config(
            resumed_dir, max_steps=4, save_steps=2, learning_rate=1e-2, resume_from_checkpoint="true"
        ),
        model_args,
        [e_share],
    )
    assert len(set(rewards(straight, "reward"))) > 1  # the sampled answers differ: a real comparison
    assert rewards(resumed, "reward")[-2:] == pytest.approx(rewards(straight, "reward")[-2:], rel=1e-4)
    assert rewards(resumed, "loss")[-2:] == pytest.approx(rewards(straight, "loss")[-2:], rel=1e-3, abs=1e-6)
    assert rewards(resumed, "anchor_loss")[-2:] == pytest.approx(
        rewards(straight, "anchor_loss")[-2:], rel=1e-3
    )


def test_grpo_stops_once_the_kl_reaches_its_target(tmp_path, rl_data, tiny_model_dir):
    out = grpo.main(
        grpo.GRPOScriptArgs(dataset=str(rl_data), kl_target=1e-6, kl_window=1),
        grpo_config(tmp_path / "grpo", max_steps=8, learning_rate=3e-2, beta=0.04),
        ModelConfig(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8),
        reward_funcs=[e_share],
    )
    kl = rewards(out, "kl")
    assert kl[0] == 0.0  # the first step samples from the reference itself
    assert 2 <= len(kl) < 8 and kl[-1] >= 1e-6, kl  # stopped at the first log past the target
    assert (out / "adapter_model.safetensors").is_file()
    with pytest.raises(ConfigError, match="needs beta > 0"):
        grpo.main(
            grpo.GRPOScriptArgs(dataset=str(rl_data), kl_target=0.01),
            grpo_config(tmp_path / "nokl", max_steps=2),
            ModelConfig(model_name_or_path=str(tiny_model_dir)),
        )


def test_charge_unended_scores_answers_cut_at_the_length_limit(tmp_path, rl_data, tiny_model_dir):
    """The tiny model rarely ends within 6 tokens: charged, its cut answers score -1 on format and, unmasked,
    stay in the loss."""
    means = {}
    for charge in (False, True):
        out = grpo.main(
            grpo.GRPOScriptArgs(dataset=str(rl_data), charge_unended=charge),
            grpo_config(
                tmp_path / str(charge),
                max_steps=1,
                max_completion_length=6,
                mask_truncated_completions=not charge,
            ),
            ModelConfig(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8),
        )
        clipped = rewards(out, "completions/clipped_ratio")[0]
        assert clipped > 0.5
        means[charge] = rewards(out, "rewards/format/mean")[0]
    assert means[True] <= 1.0 - 2 * clipped + 1e-6 < means[False], means


def test_grpo_anchor_adds_the_supervised_loss_of_stage_2_conversations(
    tmp_path, rl_data, anchor_data, tiny_model_dir
):
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8)
    config = dict(max_steps=4, learning_rate=3e-2, temperature=1.0, logging_steps=1)
    anchored = grpo.main(
        grpo.GRPOScriptArgs(dataset=str(rl_data), anchor_dataset=str(anchor_data), anchor_weight=5.0),
        grpo_config(tmp_path / "anchored", **config),
        model_args,
        reward_funcs=[e_share],
    )
    losses = rewards(anchored, "anchor_loss")
    assert len(losses) == 4 and all(0 < x < 20 for x in losses)
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses  # a heavy anchor is learnt: its loss falls
    alone = grpo.main(  # a dataset at weight 0 is the anchor switched off (configs/toy/grpo.yaml)
        grpo.GRPOScriptArgs(dataset=str(rl_data), anchor_dataset=str(anchor_data), anchor_weight=0.0),
        grpo_config(tmp_path / "alone", **config),
        model_args,
        [e_share],
    )
    assert not rewards(alone, "anchor_loss")
    a, b = load_file(anchored / "adapter_model.safetensors"), load_file(alone / "adapter_model.safetensors")
    # same seed, same prompts: the anchor moved the weights
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="needs both anchor_dataset and anchor_weight"):
        grpo.main(
            grpo.GRPOScriptArgs(dataset=str(rl_data), anchor_weight=1.0),
            grpo_config(tmp_path / "half", max_steps=1),
            model_args,
        )


def test_relation_weight_needs_prompts_with_a_layout(tmp_path, rl_data, tiny_model_dir):
    bare = tmp_path / "bare"
    shutil.copytree(rl_data, bare, symlinks=True)
    rows = [json.loads(line) for line in (bare / "prompts.jsonl").read_text().splitlines()]
    assert all("layout" in r for r in rows)  # the toy world writes one
    (bare / "prompts.jsonl").write_text("".join(json.dumps({**r, "layout": []}) + "\n" for r in rows))
    for relations in ({"relation_weight": 0.3}, {"claim_penalty": 0.3}):
        with pytest.raises(ConfigError, match="need prompts with a `layout`"):
            grpo.main(
                grpo.GRPOScriptArgs(dataset=str(bare), **relations),
                grpo_config(tmp_path / "norel", max_steps=1),
                ModelConfig(model_name_or_path=str(tiny_model_dir)),
            )


def test_hard_samples_trains_on_the_prompts_where_a_sampled_answer_errs_and_a_resume_reads_them_back(
    tmp_path, rl_data, tiny_model_dir, caplog
):
    args = grpo.GRPOScriptArgs(dataset=str(rl_data), hard_samples=2)
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir))
    out = grpo.main(
        args, grpo_config(tmp_path / "first", max_steps=1, temperature=1.0), model_args, [e_share]
    )
    saved = json.loads((out / "hard_prompts.json").read_text())
    rows = [json.loads(line) for line in (rl_data / "prompts.jsonl").read_text().splitlines()]
    assert (saved["samples"], saved["of"]) == (2, len(rows))
    assert saved["kept"] == sorted(set(saved["kept"])) and 0 < saved["wrong_answers"] <= 2 * len(rows)
    # an untrained model answers no short question right, so every one of them is kept
    short = {i for i, row in enumerate(rows) if row.get("answer_type", "free") != "free"}
    assert short and short <= set(saved["kept"])
    again = tmp_path / "again"
    again.mkdir()
    (again / "hard_prompts.json").write_text(json.dumps({**saved, "kept": saved["kept"][:1]}))
    with caplog.at_level("INFO", logger="training.grpo"):
        grpo.main(args, grpo_config(again, max_steps=1, temperature=1.0), model_args, [e_share])
    assert f"hard prompts: 1 of {len(rows)}, read from" in caplog.text
