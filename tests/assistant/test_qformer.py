"""The Q-Former connector (BLIP-2): building, saving, loading, answering, and the CLIP -> BLIP-2 tower conversion."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForImageTextToText,
    Blip2ForConditionalGeneration,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from assistant.errors import ConfigError
from assistant.inference import Assistant
from assistant.modeling import BLIP2_PARTS, ModelSpec, build_model, set_trainable
from assistant.processing import load_processor
from assistant.qformer import blip2_tower_from_clip
from tests.conftest import TINY_VISION

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "how many objects?"}]}]


def test_unknown_connector_is_refused_in_one_line(tiny_spec):
    with pytest.raises(
        ConfigError, match=r"unknown connector 'perceiver'; choose from \['mlp2x_gelu', 'qformer'\]"
    ):
        replace(tiny_spec, connector="perceiver")


def test_saved_model_loads_with_the_auto_classes_and_gives_the_same_greedy_tokens(
    tiny_qformer_dir, red_image
):
    model = AutoModelForImageTextToText.from_pretrained(tiny_qformer_dir).eval()
    processor = load_processor(tiny_qformer_dir)
    assert isinstance(model, Blip2ForConditionalGeneration)
    assert model.config.num_query_tokens == 4 and model.config.vision_config.image_size == 64
    prompt = processor.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert prompt.count("<image>") == 4  # the template places the query tokens inside the user turn
    inputs = processor(images=[red_image], text=[prompt], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 4
    first = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    again = AutoModelForImageTextToText.from_pretrained(tiny_qformer_dir).eval()
    assert torch.equal(first, again.generate(**inputs, max_new_tokens=8, do_sample=False))


def test_assistant_answers_with_one_two_or_no_images(tiny_qformer_dir, red_image):
    assistant = Assistant.load(tiny_qformer_dir, device="cpu")
    one = assistant.chat(QUESTION, images=[red_image], max_new_tokens=4)
    assert one.prompt_tokens == assistant.prepare(QUESTION, [red_image])["input_ids"].shape[1]
    assert one.completion_tokens >= 1
    two = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "same?"}]}
    ]
    assert assistant.chat(two, images=[red_image, red_image], max_new_tokens=4).completion_tokens >= 1
    assert assistant.chat([{"role": "user", "content": "hello"}], max_new_tokens=4).completion_tokens >= 1


def test_streaming_gives_the_same_text_as_chat(tiny_qformer_dir, red_image):
    assistant = Assistant.load(tiny_qformer_dir, device="cpu")
    whole = assistant.chat(QUESTION, images=[red_image], max_new_tokens=6).text
    assert "".join(assistant.stream(QUESTION, images=[red_image], max_new_tokens=6)) == whole


def test_trainable_parts_are_named_for_blip2(tiny_spec):
    model, _ = build_model(replace(tiny_spec, connector="qformer", num_query_tokens=2, qformer_layers=1))
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("vision_model."))
    count = set_trainable(model, ["connector"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert count == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert trainable and all(n.startswith(BLIP2_PARTS["connector"]) for n in trainable)
    assert "query_tokens" in trainable and any(n.startswith("language_projection.") for n in trainable)


def test_query_tokens_start_distinct(tiny_spec):
    """transformers initialises them to zeros; identical queries would train identically and stay one summary."""
    model, _ = build_model(replace(tiny_spec, connector="qformer", num_query_tokens=4, qformer_layers=1))
    queries = model.query_tokens[0]
    assert 0.01 < float(queries.std()) < 0.05
    assert torch.cdist(queries, queries).fill_diagonal_(1.0).min() > 0.05


def test_a_siglip_tower_is_refused_with_what_to_do(tiny_spec):
    siglip = dict(TINY_VISION, model_type="siglip_vision_model")
    with pytest.raises(ConfigError, match="needs a CLIP or BLIP-2 vision tower.*mlp2x_gelu"):
        build_model(replace(tiny_spec, vision=siglip, connector="qformer"))


def _clip() -> CLIPVisionModel:
    torch.manual_seed(0)
    config = CLIPVisionConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"})
    clip = CLIPVisionModel(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a dropped weight would show
        for name, param in clip.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    return clip


@pytest.mark.parametrize("layer", [-1, -2])
def test_conversion_carries_every_weight_but_the_pre_layernorm(layer):
    """With CLIP's pre-LayerNorm switched off, the converted tower computes CLIP's features exactly (normalised by
    BLIP-2's plain post_layernorm). With it on, they differ: training/stage0/blip2_tower.py distills that gap."""
    clip = _clip()
    tower = blip2_tower_from_clip(clip, image_size=32, feature_layer=layer).eval()
    assert tower.config.num_hidden_layers == 2 + 1 + layer
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        converted = tower(pixel_values=pixels).last_hidden_state
        with_pre_ln = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
        getattr(clip, "vision_model", clip).pre_layrnorm = torch.nn.Identity()
        without = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
    assert torch.allclose(converted, F.layer_norm(without, (32,), eps=1e-6), atol=1e-4)
    assert not torch.allclose(converted, F.layer_norm(with_pre_ln, (32,), eps=1e-6), atol=1e-2)


def test_a_wider_image_gets_each_patch_its_position_inside_its_tile():
    clip = _clip()
    tower = blip2_tower_from_clip(clip, image_size=64, feature_layer=-2)
    positions = tower.embeddings.position_embedding[0]  # (1 + 8 * 8, D)
    grid = getattr(clip, "vision_model", clip).embeddings.position_embedding.weight[1:].reshape(4, 4, -1)
    full = positions[1:].reshape(8, 8, -1)
    assert torch.equal(full[5, 6], grid[1, 2]) and torch.equal(full[0, 0], grid[0, 0])
    with pytest.raises(ConfigError, match="not a multiple of the patch size"):
        blip2_tower_from_clip(clip, image_size=60)


def test_model_spec_with_qformer_knobs_builds_that_shape(tiny_spec):
    model, processor = build_model(
        replace(
            tiny_spec,
            connector="qformer",
            num_query_tokens=3,
            qformer_layers=2,
            qformer_hidden=16,
            qformer_heads=2,
        )
    )
    assert model.query_tokens.shape == (1, 3, 16)
    assert model.config.qformer_config.num_hidden_layers == 2
    assert model.language_projection.out_features == 32
    assert model.config.vision_config.image_size == 32  # the tower's own by default
    assert isinstance(ModelSpec, type)
