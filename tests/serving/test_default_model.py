"""The embedded default model answers toy-world questions through the API (slow; needs `make toy-model`)."""

from __future__ import annotations

import pytest
from openai import OpenAI

from assistant.paths import DEFAULT_MODEL_DIR
from tests.serving.conftest import API_KEY, data_url, png_bytes, running_server, server_settings

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="the embedded model is not built"
)
def test_default_model_answers_toy_world_questions():
    from assistant.toyworld import EVAL_SEED_BASE, PRESETS, build_records, generate_scene, render

    settings = server_settings(
        None, max_image_pixels=40_000_000, max_image_side=8192, max_image_bytes=10_000_000
    )
    with running_server(settings) as (url, _):
        client = OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
        name = client.models.list().data[0].id
        right = total = 0
        for seed in range(EVAL_SEED_BASE, EVAL_SEED_BASE + 40):
            scene = generate_scene(seed, PRESETS["standard"])
            image = data_url(png_bytes(render(scene)))
            for record in build_records("count", [scene], seed) + build_records("color", [scene], seed):
                qa = record.turns[0]
                content = [
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "text", "text": qa.question},
                ]
                answer = (
                    client.chat.completions.create(
                        model=name, messages=[{"role": "user", "content": content}], max_tokens=16
                    )
                    .choices[0]
                    .message.content
                )
                right += answer.strip().lower().rstrip(".") == qa.answer.lower()
                total += 1
        assert total >= 40 and right / total > 0.4, f"{right}/{total}"  # chance is about 0.2
