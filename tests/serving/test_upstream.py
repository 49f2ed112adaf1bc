"""The upstream engine: this server as a gateway in front of a second instance of itself on another port, and
the gateway's reading of what vLLM sends (its error bodies and streams, replayed as bytes)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from assistant.errors import ConfigError
from serving.engines.upstream import UpstreamEngine, _UpstreamStream, finish_reason, upstream_error
from serving.errors import (
    ContextLengthExceeded,
    GenerationFailed,
    InvalidRequest,
    Overloaded,
    UpstreamFailed,
)
from serving.metrics import Metrics
from serving.settings import ServeSettings
from tests.serving.conftest import API_KEY, png_bytes, running_server

GATEWAY_KEY = "gateway-key"


def gateway_settings(upstream: str, **overrides) -> ServeSettings:
    values = dict(
        engine="upstream",
        upstream_url=upstream + "/v1",
        upstream_api_key=API_KEY,
        api_keys=(GATEWAY_KEY,),
        fetch_allow_hosts=("127.0.0.1",),
        ocr="off",
        max_image_pixels=1_000_000,
        default_max_tokens=8,
    )
    values.update(overrides)
    return ServeSettings(**values)


@pytest.fixture(scope="module")
def gateway(server) -> Iterator[OpenAI]:
    with running_server(gateway_settings(server)) as (url, _):
        yield OpenAI(base_url=url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=60)


def test_gateway_answers_like_the_upstream(gateway, client, model_name, image_server):
    assert [m.id for m in gateway.models.list().data] == [model_name]
    content = [
        {"type": "image_url", "image_url": {"url": image_server + "/red.png"}},
        {"type": "text", "text": "how many objects are there?"},
    ]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    direct = client.chat.completions.create(model=model_name, messages=messages, max_tokens=8)
    through = gateway.chat.completions.create(model=model_name, messages=messages, max_tokens=8)
    assert through.choices[0].message.content == direct.choices[0].message.content
    assert through.usage.prompt_tokens == direct.usage.prompt_tokens
    assert through.usage.completion_tokens == direct.usage.completion_tokens
    chunks = list(
        gateway.chat.completions.create(
            model=model_name,
            messages=messages,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == direct.choices[0].message.content
    )
    assert chunks[-1].usage.completion_tokens == direct.usage.completion_tokens


def test_gateway_maps_upstream_errors(gateway, model_name):
    from openai import BadRequestError, NotFoundError

    with pytest.raises(BadRequestError) as info:
        gateway.chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": "hi"}], max_tokens=600
        )
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(NotFoundError):
        gateway.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    assert gateway.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "hi"}]
    ).choices


def test_gateway_refuses_to_start_with_a_wrong_upstream_key(server):
    engine = UpstreamEngine(gateway_settings(server, upstream_api_key="wrong"), Metrics())
    with pytest.raises(ConfigError, match="upstream-api-key"):
        asyncio.run(engine.start())


def test_gateway_reports_a_dead_upstream(tiny_model_dir):
    from tests.serving.conftest import server_settings

    with running_server(server_settings(tiny_model_dir)) as (upstream, upstream_server):
        with running_server(gateway_settings(upstream)) as (url, _):
            gateway = OpenAI(base_url=url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=30)
            name = gateway.models.list().data[0].id
            upstream_server.should_exit = True
            deadline = time.monotonic() + 20
            status = 200
            while status == 200 and time.monotonic() < deadline:  # the probe notices within its interval
                time.sleep(0.5)
                status = httpx.get(url + "/health").status_code
            assert status == 503
            response = httpx.post(
                url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code in (502, 503)
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_upstream_error_mapping():
    assert (
        upstream_error(400, b'{"error": {"message": "too long", "code": "context_length_exceeded"}}').status
        == 400
    )
    assert upstream_error(401, b"{}").status == 502
    assert upstream_error(429, b"nope").status == 429
    assert (
        upstream_error(500, b"<html>Traceback ...</html>").message
        == "the upstream model answered HTTP 500; retry later"
    )


def _chat(url: str, body: dict) -> httpx.Response:
    return httpx.post(
        url + "/chat/completions", headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, json=body, timeout=60
    )


def test_gateway_finish_reasons_length_and_stop(gateway, client, model_name):
    messages = [{"role": "user", "content": "describe the picture"}]
    for stream in (False, True):
        kwargs = dict(model=model_name, messages=messages, max_tokens=2)
        if stream:
            chunks = list(gateway.chat.completions.create(stream=True, **kwargs))
            reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert reasons == ["length"]
        else:
            assert gateway.chat.completions.create(**kwargs).choices[0].finish_reason == "length"
    direct = client.chat.completions.create(model=model_name, messages=messages, max_tokens=8)
    text = direct.choices[0].message.content
    stop = (
        [text[-1]] if text else None
    )  # the answer holds it, so it ends there (or ends by itself) with "stop"
    direct = client.chat.completions.create(model=model_name, messages=messages, max_tokens=8, stop=stop)
    through = gateway.chat.completions.create(model=model_name, messages=messages, max_tokens=8, stop=stop)
    assert direct.choices[0].finish_reason == through.choices[0].finish_reason == "stop"
    assert through.choices[0].message.content == direct.choices[0].message.content


def test_gateway_errors_come_before_the_first_byte(gateway, model_name):
    """A streamed request the upstream refuses gets the error status, not a 200 with an error in the stream."""
    url = str(gateway.base_url).rstrip("/")
    too_long = {"model": model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 600}
    wide = "data:image/png;base64," + base64.b64encode(png_bytes(Image.new("RGB", (3000, 8)))).decode()
    # the gateway takes sides up to 8192 px; the upstream (tests/serving/conftest.py) only up to 2000
    too_wide = {
        "model": model_name,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": wide}}]}],
    }
    for body, code in ((too_long, "context_length_exceeded"), (too_wide, "invalid_request")):
        response = _chat(url, body | {"stream": True})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == code


def test_gateway_refuses_max_tokens_past_the_context(gateway, model_name):
    """Like the in-process engines: prompt + max_tokens over the context is a 400, streamed or not (the tiny
    model's context is 512), never an answer cut short with finish_reason "length"."""
    from openai import BadRequestError

    for max_tokens, stream in ((512, False), (512, True), (10_000, False)):
        with pytest.raises(BadRequestError) as info:
            result = gateway.chat.completions.create(
                model=model_name,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=max_tokens,
                stream=stream,
            )
            list(result) if stream else None
        assert info.value.code == "context_length_exceeded"
        assert "context" in info.value.message


# --- what vLLM sends (vllm 0.30.0: entrypoints/serve/exception_handling/error_response.py,
# entrypoints/openai/chat_completion/serving.py); vLLM cannot run here, so its bytes are replayed -----------------


def vllm_error(message: str, status: int, param: str | None = None) -> bytes:
    error = {"message": message, "type": "BadRequestError", "param": param, "code": status}
    return json.dumps({"error": error}).encode()


def test_upstream_error_mapping_of_vllm_bodies():
    too_long = "This model's maximum context length is 1024 tokens. However, you requested 900 output tokens"
    assert isinstance(upstream_error(400, vllm_error(too_long, 400, "input_tokens")), ContextLengthExceeded)
    assert isinstance(
        upstream_error(400, vllm_error("max_tokens=5000 ...", 400, "max_tokens")), ContextLengthExceeded
    )
    assert isinstance(upstream_error(400, vllm_error("top_k must be ...", 400, "top_k")), InvalidRequest)
    assert upstream_error(503, vllm_error("The engine is currently busy", 503)).status == 429
    assert upstream_error(503, b'{"error": {"message": "x", "code": "engine_unavailable"}}').status == 502
    assert upstream_error(500, vllm_error("EngineCore encountered an issue", 500)).status == 502
    for reason, ours in (
        ("stop", "stop"),
        ("length", "length"),
        ("repetition", "stop"),
        ("tool_calls", "stop"),
    ):
        assert finish_reason(reason) == ours
    with pytest.raises(UpstreamFailed):
        finish_reason("abort")
    with pytest.raises(GenerationFailed):
        finish_reason("error")


def sse(*events: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def chunk(content: str | None, prompt: int, completion: int, finish: str | None = None) -> dict:
    delta = {"role": "assistant", "content": ""} if content is None else {"content": content}
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": usage,
    }


def replay(body: bytes, max_tokens: int, context: int = 100) -> list:
    """Run the gateway's stream reader over bytes as vLLM sends them (with continuous usage stats)."""
    engine = UpstreamEngine(gateway_settings("http://127.0.0.1:9"), Metrics())
    engine.context_length = context

    async def go():
        stream = _UpstreamStream(httpx.Response(200, content=body), engine, max_tokens)
        await stream.begin()
        return [d async for d in stream], engine._running

    return asyncio.run(go())


def test_vllm_stream_is_read_with_its_usage():
    body = sse(chunk(None, 40, 0), chunk("Two", 40, 1), chunk(" red", 40, 2), chunk("", 40, 2, "length"))
    deltas, running = replay(body, max_tokens=2)
    assert "".join(d.text for d in deltas) == "Two red"
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens, deltas[-1].finish_reason) == (
        40,
        2,
        "length",
    )
    assert running == 0


def test_vllm_clamping_is_refused_before_the_first_byte():
    """vLLM would clamp max_tokens to the 60 tokens left; its first chunk's usage shows the prompt is 40."""
    with pytest.raises(ContextLengthExceeded, match=r"prompt \(40 tokens\) plus max_tokens \(61\)"):
        replay(sse(chunk(None, 40, 0), chunk("a", 40, 1)), max_tokens=61)


def test_vllm_error_in_the_first_event_is_raised_before_the_first_byte():
    """vLLM admits a request after its 200 and reports a full queue as the stream's first event."""
    busy = json.loads(vllm_error("The engine is currently busy and cannot accept new requests.", 503))
    with pytest.raises(Overloaded):
        replay(sse(busy), max_tokens=4)
    failed = json.loads(vllm_error("Internal server error", 500))
    with pytest.raises(UpstreamFailed):
        replay(sse(chunk(None, 40, 0), chunk("a", 40, 1), failed), max_tokens=4)
