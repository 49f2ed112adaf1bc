"""Acceptance: the official openai client against a real server on a loopback port."""

from __future__ import annotations

import re

import httpx
from PIL import Image

from assistant.threads import choose_threads
from tests.serving.conftest import data_url, png_bytes, red_square


def image_question(url: str, text: str = "how many objects are there?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
        }
    ]


def test_models_lists_the_served_model(client, tiny_model_dir):
    models = client.models.list().data
    assert [m.id for m in models] == [tiny_model_dir.name]


def test_non_streaming_answer_with_usage(client, model_name):
    answer = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "how many objects are there?"}], max_tokens=6
    )
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == model_name
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 0 < answer.usage.completion_tokens <= 6
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streaming_matches_non_streaming_and_reports_usage(client, model_name):
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "a red circle"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "how many objects are there?"},
    ]
    whole = client.chat.completions.create(model=model_name, messages=messages, max_tokens=10)
    chunks = list(
        client.chat.completions.create(
            model=model_name,
            messages=messages,
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stream_ends_with_done(server, http, model_name):
    body = {
        "model": model_name,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "stream": True,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_base64_image(client, model_name):
    with_image = client.chat.completions.create(
        model=model_name, messages=image_question(data_url(png_bytes(red_square()))), max_tokens=4
    )
    without = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "how many objects are there?"}], max_tokens=4
    )
    # The image adds its AnyRes feature tokens to the prompt.
    assert with_image.usage.prompt_tokens > without.usage.prompt_tokens + 20


def test_url_image_from_allow_listed_server(client, model_name, image_server):
    by_url = client.chat.completions.create(
        model=model_name, messages=image_question(image_server + "/red.png"), max_tokens=6
    )
    by_data = client.chat.completions.create(
        model=model_name, messages=image_question(data_url(png_bytes(red_square()))), max_tokens=6
    )
    assert by_url.choices[0].message.content == by_data.choices[0].message.content
    assert by_url.usage.prompt_tokens == by_data.usage.prompt_tokens
    redirected = client.chat.completions.create(
        model=model_name, messages=image_question(image_server + "/redirect"), max_tokens=6
    )
    assert redirected.choices[0].message.content == by_url.choices[0].message.content


def test_two_images_in_one_request(client, model_name, image_server):
    one = client.chat.completions.create(
        model=model_name, messages=image_question(image_server + "/red.png"), max_tokens=3
    )
    blue = data_url(png_bytes(Image.new("RGB", (40, 40), (20, 20, 220))))
    content = [
        {"type": "image_url", "image_url": {"url": image_server + "/red.png"}},
        {"type": "image_url", "image_url": {"url": blue}},
        {"type": "text", "text": "how many objects are there?"},
    ]
    two = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": content}], max_tokens=3
    )
    assert two.usage.prompt_tokens > one.usage.prompt_tokens + 20


def test_sampling_parameters(client, model_name):
    messages = [{"role": "user", "content": "yes no green star"}]
    seeded = [
        client.chat.completions.create(
            model=model_name, messages=messages, max_completion_tokens=8, temperature=1.2, top_p=0.9, seed=7
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
    several = client.chat.completions.create(
        model=model_name, messages=messages, max_tokens=5, n=3, temperature=1.0, seed=1
    )
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert 3 <= several.usage.completion_tokens <= 15  # three answers of at most 5 tokens each
    greedy = (
        client.chat.completions.create(model=model_name, messages=messages, max_tokens=12)
        .choices[0]
        .message.content
    )
    if len(greedy) > 2:
        stop = greedy[1:3]
        stopped = client.chat.completions.create(
            model=model_name, messages=messages, max_tokens=12, stop=[stop]
        )
        assert stopped.choices[0].finish_reason == "stop"
        assert stop not in stopped.choices[0].message.content
        assert greedy.startswith(stopped.choices[0].message.content)


def test_health_ready_and_metrics(server, http, client, model_name):
    client.chat.completions.create(
        model=model_name, messages=image_question(data_url(png_bytes(red_square()))), max_tokens=3
    )
    assert httpx.get(server + "/health").status_code == 200  # liveness needs no key
    assert http.get("/ready").json() == {"status": "ok"}
    text = http.get("/metrics").text
    for name in (
        'assistant_requests_total{route="/v1/chat/completions",status="200"}',
        "assistant_time_to_first_token_seconds_bucket",
        "assistant_inter_token_latency_seconds_bucket",
        "assistant_requests_running",
        "assistant_requests_waiting",
        "assistant_images_total",
        "assistant_ocr_seconds_bucket",
        "assistant_batch_size_bucket",
    ):
        assert name in text, name
    # the thread rule reached the engine core: one thread for a tiny model unless OMP_NUM_THREADS says otherwise
    expected = choose_threads(params=1_000_000).threads
    assert re.search(rf"^assistant_engine_threads {expected}\.0$", text, re.M), text[-600:]
