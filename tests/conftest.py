"""Shared fixtures: one tiny LLaVA-NeXT model (hidden 32, 2 layers, 32 px tiles of 8 px patches) per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

TINY_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)
TINY_GRIDS = [[32, 64], [64, 32], [64, 64], [32, 96], [96, 32]]
CORPUS = ["a red circle left of a blue square", "how many objects are there? 3", "yes no green star"] * 20


def tiny_language(vocab_size: int) -> dict:
    return dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=512,
    )


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from assistant.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_spec(tiny_tokenizer):
    from assistant.modeling import ModelSpec

    return ModelSpec(
        vision=TINY_VISION,
        language=tiny_language(len(tiny_tokenizer)),
        tokenizer=tiny_tokenizer,
        image_grid_pinpoints=TINY_GRIDS,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_spec) -> Path:
    """A saved tiny LLaVA-NeXT directory, built once per test session."""
    from assistant.modeling import build_model, save_model

    model, processor = build_model(tiny_spec)
    return save_model(model, processor, tmp_path_factory.mktemp("models") / "tiny-llava-next")


@pytest.fixture(scope="session")
def tiny_qformer_dir(tmp_path_factory, tiny_spec) -> Path:
    """A saved tiny Q-Former (BLIP-2) directory: the tiny spec's CLIP tower converted, reading 64 px images (two
    tiles wide), 4 query tokens, one Q-Former layer."""
    from dataclasses import replace

    from assistant.modeling import build_model, save_model

    spec = replace(
        tiny_spec, connector="qformer", num_query_tokens=4, qformer_layers=1, qformer_image_size=64
    )
    model, processor = build_model(spec)
    return save_model(model, processor, tmp_path_factory.mktemp("models") / "tiny-qformer")


@pytest.fixture(scope="session")
def tiny_assistant(tiny_model_dir):
    from assistant.inference import Assistant

    return Assistant.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_qformer_assistant(tiny_qformer_dir):
    from assistant.inference import Assistant

    return Assistant.load(tiny_qformer_dir, device="cpu")


@pytest.fixture
def red_image() -> Image.Image:
    image = Image.new("RGB", (60, 40), (240, 240, 240))
    image.paste((220, 30, 30), (10, 10, 30, 30))
    return image
