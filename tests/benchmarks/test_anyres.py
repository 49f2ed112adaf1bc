"""The fast AnyRes path gives the reference LLaVA-NeXT processor's pixel values, on many image sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from assistant.anyres import anyres_preprocess, fit_size
from assistant.errors import ConfigError
from assistant.toyworld import PRESETS, generate_scene, render

SIZES = [(32, 32), (40, 60), (37, 91), (200, 64), (64, 200), (333, 129), (10, 300), (97, 97), (1, 5)]


@pytest.fixture(scope="module")
def image_processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir).image_processor


def noise(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("height,width", SIZES)
def test_single_image_matches_reference(image_processor, height, width):
    image = noise(height, width, seed=height * 1000 + width)
    ref = image_processor([image], return_tensors="pt")
    fast = anyres_preprocess([image], image_processor)
    assert fast["pixel_values"].shape == ref["pixel_values"].shape
    assert fast["pixel_values"].dtype == ref["pixel_values"].dtype
    assert torch.allclose(fast["pixel_values"], ref["pixel_values"], atol=1e-6)
    assert torch.equal(fast["image_sizes"], ref["image_sizes"])


def test_batch_of_mixed_sizes_and_modes_matches_reference(image_processor, red_image):
    images = [render(generate_scene(s, PRESETS["tiny"])) for s in range(3)]
    images += [red_image, noise(50, 20, 1).convert("L"), noise(70, 33, 2).convert("RGBA")]
    ref = image_processor(images, return_tensors="pt")
    fast = anyres_preprocess(images, image_processor)
    assert (
        fast["pixel_values"].shape == ref["pixel_values"].shape
    )  # padded to the most tiles, like the reference
    assert torch.allclose(fast["pixel_values"], ref["pixel_values"], atol=1e-6)
    assert torch.equal(fast["image_sizes"], ref["image_sizes"])


def test_model_gives_the_same_logits_with_either_path(tiny_assistant, red_image):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    inputs = tiny_assistant.prepare(messages, [red_image])
    fast = anyres_preprocess([red_image], tiny_assistant.processor.image_processor)
    with torch.inference_mode():
        ref_logits = tiny_assistant.model(**inputs).logits
        fast_logits = tiny_assistant.model(**{**inputs, **fast}).logits
    assert torch.allclose(ref_logits, fast_logits, atol=1e-5)


def test_fit_size_keeps_aspect_ratio():
    assert fit_size(40, 60, (64, 64)) == (43, 64)
    assert fit_size(100, 50, (64, 128)) == (64, 32)


def test_no_images_is_refused(image_processor):
    with pytest.raises(ConfigError, match="at least one image"):
        anyres_preprocess([], image_processor)
