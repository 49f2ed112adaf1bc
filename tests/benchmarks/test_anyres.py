"""The fast AnyRes path gives the reference LLaVA-NeXT processor's pixel values, on many image sizes; the
processor `with_fast_anyres` gives the reference processor's whole output, and saves as the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from assistant.anyres import AnyResImageProcessor, anyres_preprocess, fit_size, with_fast_anyres
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


def test_model_gives_the_same_logits_with_either_path(tiny_assistant, tiny_model_dir, red_image):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    reference = AutoProcessor.from_pretrained(tiny_model_dir)
    assert type(reference.image_processor) is not AnyResImageProcessor
    prompt = reference.apply_chat_template(messages, add_generation_prompt=True)
    inputs = reference(images=[red_image], text=[prompt], return_tensors="pt")
    assert isinstance(tiny_assistant.processor.image_processor, AnyResImageProcessor)  # Assistant.load's
    fast = tiny_assistant.prepare(messages, [red_image])
    with torch.inference_mode():
        ref_logits = tiny_assistant.model(**inputs).logits
        fast_logits = tiny_assistant.model(**fast).logits
    assert torch.allclose(ref_logits, fast_logits, atol=1e-5)


def test_processor_on_the_fast_path_gives_the_reference_output(tiny_model_dir, red_image, tmp_path):
    reference = AutoProcessor.from_pretrained(tiny_model_dir)
    fast = with_fast_anyres(AutoProcessor.from_pretrained(tiny_model_dir))
    assert isinstance(fast.image_processor, AnyResImageProcessor)
    images = [red_image, noise(37, 91, 3), render(generate_scene(7, PRESETS["tiny"]))]
    content = [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}, {"type": "image"}]
    see_through = noise(40, 50, 4).convert("RGBA")
    see_through.putalpha(0)  # the reference flattens transparency onto white: such calls go to it
    images, content = images + [see_through], content + [{"type": "image"}]
    prompt = reference.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    want = reference(images=images, text=[prompt], return_tensors="pt")
    got = fast(images=images, text=[prompt], return_tensors="pt")
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # calls the fast path does not reproduce go to the reference
    unpadded = fast.image_processor([red_image], return_tensors="pt", do_pad=False)
    assert torch.equal(
        unpadded["pixel_values"],
        reference.image_processor([red_image], return_tensors="pt", do_pad=False)["pixel_values"],
    )
    # it saves as the reference class, so the directory loads anywhere
    fast.save_pretrained(tmp_path)
    assert type(AutoProcessor.from_pretrained(tmp_path).image_processor) is type(reference.image_processor)


def test_processors_the_fast_path_does_not_reproduce_are_left_alone(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    processor.image_processor.size = {"shortest_edge": 2 * processor.image_processor.crop_size["height"]}
    assert with_fast_anyres(processor).image_processor.__class__ is not AnyResImageProcessor


def test_fit_size_keeps_aspect_ratio():
    assert fit_size(40, 60, (64, 64)) == (43, 64)
    assert fit_size(100, 50, (64, 128)) == (64, 32)


def test_no_images_is_refused(image_processor):
    with pytest.raises(ConfigError, match="at least one image"):
        anyres_preprocess([], image_processor)
