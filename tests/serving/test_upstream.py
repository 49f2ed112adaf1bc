"""The upstream engine: this server as a gateway in front of a second instance of itself on another port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from assistant.errors import ConfigError
from serving.engines.upstream import UpstreamEngine, upstream_error
from serving.metrics import Metrics
from serving.settings import ServeSettings
from tests.serving.conftest import API_KEY, running_server

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
