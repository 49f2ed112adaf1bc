"""Model assembly: the saved directory loads with the Auto classes, token and feature counts agree, freezing."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from assistant.errors import ConfigError, ModelLoadError
from assistant.modeling import ModelSpec, build_model, save_model, set_trainable
from tests.conftest import TINY_GRIDS, TINY_VISION, tiny_language

VLLM_FIELDS = [
    "architectures",
    "model_type",
    "image_token_index",
    "vision_feature_layer",
    "vision_feature_select_strategy",
    "image_grid_pinpoints",
    "projector_hidden_act",
]


def _prompt(processor, n_images: int = 1) -> str:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": "how many objects?"}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def test_saved_directory_reloads_with_auto_classes_and_generates_the_same(tiny_spec, tmp_path, red_image):
    model, processor = build_model(tiny_spec)
    inputs = processor(images=[red_image], text=[_prompt(processor)], return_tensors="pt")
    with torch.inference_mode():
        before = model.eval().generate(**inputs, max_new_tokens=8, do_sample=False)
    save_model(model, processor, tmp_path / "m")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "m").eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path / "m")
    inputs2 = loaded_processor(images=[red_image], text=[_prompt(loaded_processor)], return_tensors="pt")
    assert torch.equal(inputs.input_ids, inputs2.input_ids)
    with torch.inference_mode():
        after = loaded.generate(**inputs2, max_new_tokens=8, do_sample=False)
    assert before.shape[1] == inputs.input_ids.shape[1] + 8
    assert torch.equal(before, after)


def test_chat_template_puts_a_message_s_images_before_its_text(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    orders = (
        [{"type": "image"}, {"type": "text", "text": "how many?"}],
        [{"type": "text", "text": "how many?"}, {"type": "image"}],
        [{"type": "text", "text": "how "}, {"type": "image"}, {"type": "text", "text": "many?"}],
    )
    prompts = {processor.apply_chat_template([{"role": "user", "content": c}]) for c in orders}
    assert prompts == {"<|im_start|>user\n<image>\nhow many?<|im_end|>\n"}


def test_saved_directory_carries_what_vllm_needs(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    for key in VLLM_FIELDS:
        assert key in config, key
    assert config["architectures"] == ["LlavaNextForConditionalGeneration"]
    assert config["model_type"] == "llava_next"
    assert config["projector_hidden_act"] == "gelu"
    processor_config = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert processor_config["patch_size"] == 8
    assert processor_config["vision_feature_select_strategy"] == "default"
    preprocessor = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    assert preprocessor["image_grid_pinpoints"] == TINY_GRIDS
    assert "<image>" in (tiny_model_dir / "chat_template.jinja").read_text()
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == AutoProcessor.from_pretrained(tiny_model_dir).tokenizer.eos_token_id


def test_directory_name_does_not_matter(tiny_model_dir, tmp_path):
    import shutil

    renamed = shutil.copytree(tiny_model_dir, tmp_path / "lora-merged-qlora-v1.5")
    assert (
        type(AutoModelForImageTextToText.from_pretrained(renamed)).__name__
        == "LlavaNextForConditionalGeneration"
    )


@pytest.mark.parametrize(
    "size", [(32, 32), (60, 40), (40, 60), (200, 50), (50, 200), (96, 96), (500, 333), (7, 300)]
)
def test_image_tokens_equal_image_features(tiny_assistant, size):
    model, processor = tiny_assistant.model, tiny_assistant.processor
    image = Image.new("RGB", size, (10, 200, 10))
    inputs = processor(
        images=[image, image.transpose(Image.Transpose.ROTATE_90)],
        text=[_prompt(processor, 2)],
        return_tensors="pt",
    )
    n_tokens = int((inputs.input_ids == model.config.image_token_index).sum())
    with torch.inference_mode():
        feats = model.model.get_image_features(
            pixel_values=inputs.pixel_values, image_sizes=inputs.image_sizes
        )
    feats = getattr(feats, "pooler_output", feats)
    assert n_tokens == sum(f.shape[0] for f in feats)
    with torch.inference_mode():
        model(**inputs)  # the model's own check agrees


def test_fixed_resolution_builds_plain_llava(tiny_spec, tmp_path, red_image):
    from dataclasses import replace

    model, processor = build_model(replace(tiny_spec, image_grid_pinpoints=None, max_tiles=None))
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    inputs = processor(images=[red_image], text=[_prompt(processor)], return_tensors="pt")
    assert int((inputs.input_ids == model.config.image_token_index).sum()) == (32 // 8) ** 2
    save_model(model, processor, tmp_path / "fixed")
    assert (
        type(AutoModelForImageTextToText.from_pretrained(tmp_path / "fixed")).__name__
        == "LlavaForConditionalGeneration"
    )


def test_vision_tower_frozen_and_only_chosen_parts_train(tiny_spec):
    model, _ = build_model(tiny_spec)
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    set_trainable(model, ["connector"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("model.multi_modal_projector.", "model.image_newline")) for n in trainable
    )
    assert {
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_2.weight",
    } <= trainable
    set_trainable(model, ["connector", "language_model"])
    assert any(n.startswith("model.language_model.") for n, p in model.named_parameters() if p.requires_grad)
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    with pytest.raises(ConfigError, match="unknown model parts"):
        set_trainable(model, ["decoder"])


def test_unknown_connector_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"unknown connector 'qformerx'; choose from \['mlp2x_gelu'"):
        ModelSpec(vision=TINY_VISION, language=tiny_language(300), connector="qformerx")


def test_builds_from_local_hub_style_directories(tmp_path, tiny_tokenizer, red_image):
    """The loading path real users take (hub ids) exercised on local directories: CLIP, SigLIP, a Llama LM."""
    vision_kwargs = {k: v for k, v in TINY_VISION.items() if k != "model_type"}
    CLIPVisionModel(CLIPVisionConfig(**vision_kwargs)).save_pretrained(tmp_path / "clip-vision")
    CLIPModel(
        CLIPConfig(
            vision_config=vision_kwargs,
            text_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
            ),
            projection_dim=16,
        )
    ).save_pretrained(tmp_path / "clip-full")
    SiglipVisionModel(SiglipVisionConfig(**vision_kwargs)).save_pretrained(tmp_path / "siglip")
    lm_kwargs = {k: v for k, v in tiny_language(len(tiny_tokenizer)).items() if k != "model_type"}
    language = LlamaForCausalLM(LlamaConfig(**lm_kwargs))
    language.save_pretrained(tmp_path / "llm")
    tiny_tokenizer.save_pretrained(tmp_path / "llm")

    for vision_dir, strategy in [("clip-vision", "default"), ("clip-full", "default"), ("siglip", "full")]:
        model, processor = build_model(
            ModelSpec(vision=str(tmp_path / vision_dir), language=str(tmp_path / "llm"))
        )
        assert model.config.vision_feature_select_strategy == strategy
        # the language model's weights were carried over, not re-initialised
        torch.testing.assert_close(
            model.model.language_model.layers[0].self_attn.q_proj.weight,
            language.model.layers[0].self_attn.q_proj.weight,
        )
        inputs = processor(images=[red_image], text=[_prompt(processor)], return_tensors="pt")
        with torch.inference_mode():
            model(**inputs)


def test_missing_model_directory_says_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="could not load the vision tower config"):
        build_model(ModelSpec(vision=str(tmp_path / "nope"), language=str(tmp_path / "nope")))
