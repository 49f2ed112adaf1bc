"""The grounding loss (training/grounding.py) for real: a tiny model trained a few steps with it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from trl import ModelConfig, SFTConfig

from assistant.errors import ConfigError
from tests.training.conftest import train_config
from training import sft
from training.stage0.config import VisionArgs
from training.stage0.vision import Stage0Heads


@pytest.fixture(scope="module")
def heads_path(tmp_path_factory):
    """Stage-0 heads for the tiny tower (width 32), saved as training/bootstrap.py saves them; seeded, so the
    teacher is fixed (its labels are arbitrary but consistent, which is all the loss needs to be learnable)."""
    torch.manual_seed(0)
    args = VisionArgs(vision_hidden=32)
    path = tmp_path_factory.mktemp("heads") / "vision_heads.pt"
    torch.save({"args": vars(args), "state_dict": Stage0Heads(args).state_dict()}, path)
    return path


def test_grounding_loss_falls_and_trains_the_connector_not_the_word_embeddings(
    tmp_path, toy_data, tiny_model_dir, heads_path
):
    out = sft.main(
        sft.SFTScriptArgs(
            dataset=str(toy_data["caption"]),
            train_parts=["connector"],
            grounding_heads=str(heads_path),
            grounding_weight=1.0,
        ),
        train_config(SFTConfig, tmp_path / "grounded", max_steps=12, learning_rate=1e-2),
        ModelConfig(model_name_or_path=str(tiny_model_dir)),
    )
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    grounding = [h["grounding"] for h in history if "grounding" in h]
    assert len(grounding) == 12
    assert sum(grounding[-3:]) / 3 < grounding[0] * 0.9
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    embeddings = [k for k in before if "embed_tokens" in k]
    assert embeddings and all(torch.equal(before[k], after[k]) for k in embeddings)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("multi_modal_projector."))


def test_grounding_needs_its_heads_and_a_positive_weight(tmp_path):
    with pytest.raises(ConfigError, match="grounding_heads"):
        sft.SFTScriptArgs(dataset="d", grounding_weight=0.5)
    with pytest.raises(ConfigError, match=">= 0"):
        sft.SFTScriptArgs(dataset="d", grounding_heads="h.pt", grounding_weight=-1.0)
