"""The Q-Former (BLIP-2) model through every stage, for real: stage-0 tower distillation, stage 1 from parts,
stage 2 full / LoRA / QLoRA with merge, DPO."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)
from trl import DPOConfig, ModelConfig, SFTConfig

from assistant.inference import Assistant
from assistant.processing import load_processor
from tests.conftest import TINY_VISION
from tests.training.conftest import train_config
from tests.training.test_stages import changed, losses, weights
from training import dpo, merge, pretrain, sft
from training.stage0.blip2_tower import TowerArgs, distill


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_model_dir) -> Path:
    """A CLIP tower, an LM and a tokenizer saved as separate directories (what stage 0 writes)."""
    root = tmp_path_factory.mktemp("parts")
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    model.model.vision_tower.save_pretrained(root / "vision")
    lm = LlamaForCausalLM(LlamaConfig(**model.config.text_config.to_dict()))
    lm.model.load_state_dict(model.model.language_model.state_dict())
    lm.save_pretrained(root / "lm")
    load_processor(tiny_model_dir).tokenizer.save_pretrained(root / "lm")
    return root


def test_stage0_distillation_brings_the_blip2_tower_closer_to_clip(tmp_path):
    CLIPVisionModel(
        CLIPVisionConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"})
    ).save_pretrained(tmp_path / "clip")
    report = distill(
        TowerArgs(
            clip=str(tmp_path / "clip"),
            out=str(tmp_path / "blip2"),
            image_size=64,
            steps=25,
            batch=4,
            eval_scenes=8,
        )
    )
    assert report["cosine_after"] > report["cosine_before"] + 0.05, report
    assert report["loss_last"] < report["loss_first"]
    assert json.loads((tmp_path / "blip2" / "config.json").read_text())["model_type"] == "blip_2_vision_model"


def test_stage1_assembles_a_qformer_model_and_trains_only_the_qformer(tmp_path, toy_data, parts):
    out = pretrain.main(
        pretrain.PretrainScriptArgs(
            dataset=str(toy_data["caption"]),
            vision=str(parts / "vision"),
            language=str(parts / "lm"),
            connector="qformer",
            num_query_tokens=4,
            qformer_layers=1,
            qformer_image_size=64,
            train_parts=["connector"],
        ),
        train_config(SFTConfig, tmp_path / "stage1", max_steps=8, learning_rate=1e-2),
        ModelConfig(),
    )
    before, after = weights(out / "assembled"), weights(out)
    assert changed(before, after, "qformer.") and changed(before, after, "language_projection.")
    assert changed(before, after, "query_tokens")
    assert not changed(before, after, "vision_model.")
    assert not changed(before, after, "language_model.")
    history = losses(out)
    assert min(history[-3:]) < history[0], history


def test_sft_full_trains_the_lm_and_qformer_not_the_tower(tmp_path, toy_data, tiny_qformer_dir):
    out = sft.main(
        sft.SFTScriptArgs(dataset=str(toy_data["instruct"]), max_samples=8),
        train_config(SFTConfig, tmp_path / "sft", max_steps=10),
        ModelConfig(model_name_or_path=str(tiny_qformer_dir)),
    )
    before, after = weights(tiny_qformer_dir), weights(out)
    assert changed(before, after, "language_model.") and changed(before, after, "qformer.")
    assert not changed(before, after, "vision_model.")
    history = losses(out)
    assert sum(history[-3:]) / 3 < history[0], history


@pytest.mark.parametrize(
    "variant", ["lora", pytest.param("qlora", marks=pytest.mark.slow)]
)  # slow: test time
def test_adapters_train_and_merge_into_a_loadable_qformer_model(
    tmp_path, toy_data, tiny_qformer_dir, red_image, variant
):
    model_args = ModelConfig(
        model_name_or_path=str(tiny_qformer_dir),
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        load_in_4bit=variant == "qlora",
    )
    out = sft.main(
        sft.SFTScriptArgs(dataset=str(toy_data["instruct"]), max_samples=8),
        train_config(SFTConfig, tmp_path / variant, max_steps=3),
        model_args,
    )
    merged = merge.main(merge.MergeArgs(adapter=str(out), out=str(tmp_path / f"{variant}-merged")))
    before, after = weights(tiny_qformer_dir), weights(merged)
    assert changed(before, after, "language_model.")
    assert changed(before, after, "language_projection.")  # saved whole (LoRA) or adapted (QLoRA)
    assert not changed(before, after, "vision_model.")
    question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    assert Assistant.load(merged).chat(question, images=[red_image], max_new_tokens=3).completion_tokens >= 1


def test_dpo_with_lora_changes_the_qformer_policy(tmp_path, toy_data, tiny_qformer_dir):
    out = dpo.main(
        dpo.DPOScriptArgs(dataset=str(toy_data["preference"]), max_samples=8),
        train_config(DPOConfig, tmp_path / "dpo", max_steps=3, learning_rate=1e-2),
        ModelConfig(model_name_or_path=str(tiny_qformer_dir), use_peft=True, lora_r=4, lora_alpha=8),
    )
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("rewards/margins" in h for h in history)
    merged = merge.main(merge.MergeArgs(adapter=str(out), out=str(tmp_path / "dpo-merged")))
    assert changed(weights(tiny_qformer_dir), weights(merged), "language_model.")
