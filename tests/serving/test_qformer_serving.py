"""A Q-Former (BLIP-2) model served for real: the transformers engine through the official openai client, and the
vllm engine's refusal before anything loads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from openai import OpenAI

from assistant.errors import ConfigError
from serving.engines.vllm_contract.standin import Script, standin_vllm
from serving.engines.vllm_engine import VLLMEngine
from serving.metrics import Metrics
from serving.settings import ServeSettings
from tests.serving.conftest import API_KEY, data_url, png_bytes, red_square, running_server, server_settings


@pytest.fixture(scope="module")
def qformer_client(tiny_qformer_dir):
    with running_server(server_settings(tiny_qformer_dir)) as (url, _):
        yield OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def image_message(text: str, images: int = 1) -> list[dict]:
    parts = [
        {"type": "image_url", "image_url": {"url": data_url(png_bytes(red_square()))}} for _ in range(images)
    ]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def test_a_served_qformer_model_answers_images_text_and_streams(qformer_client, tiny_qformer_dir):
    name = tiny_qformer_dir.name
    answer = qformer_client.chat.completions.create(
        model=name, messages=image_message("what is it?"), max_tokens=5
    )
    text_only = qformer_client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    # 4 query tokens per image: the image costs 4 prompt positions (plus its newline) over the text alone
    assert answer.usage.prompt_tokens > text_only.usage.prompt_tokens
    assert 0 < answer.usage.completion_tokens <= 5 and 0 < text_only.usage.completion_tokens <= 5
    stream = qformer_client.chat.completions.create(
        model=name, messages=image_message("what is it?"), max_tokens=5, stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == answer.choices[0].message.content
    two = qformer_client.chat.completions.create(
        model=name, messages=image_message("what is it?", images=2), max_tokens=3
    )
    assert two.usage.prompt_tokens == answer.usage.prompt_tokens + 5  # 4 query tokens and a newline


def test_concurrent_image_and_text_requests_batch_and_match_alone(qformer_client, tiny_qformer_dir):
    """Requests with and without images share batches (prefill with pixels for some rows, decoding in the LM)."""
    name = tiny_qformer_dir.name
    requests = [image_message("what is it?"), [{"role": "user", "content": "hello"}]] * 3
    alone = [
        qformer_client.chat.completions.create(model=name, messages=m, max_tokens=6)
        .choices[0]
        .message.content
        for m in requests[:2]
    ]
    with ThreadPoolExecutor(6) as pool:
        together = list(
            pool.map(
                lambda m: (
                    qformer_client.chat.completions.create(model=name, messages=m, max_tokens=6)
                    .choices[0]
                    .message.content
                ),
                requests,
            )
        )
    assert together == alone * 3


def test_vllm_refuses_a_qformer_model_in_one_line_before_loading(tiny_qformer_dir):
    settings = ServeSettings(engine="vllm", model=str(tiny_qformer_dir))
    with pytest.raises(ConfigError) as caught:
        VLLMEngine(settings, Metrics(), vllm=standin_vllm(Script()))
    message = str(caught.value)
    assert "\n" not in message and "Q-Former (BLIP-2)" in message and "--engine transformers" in message
