"""Resilience fixtures: one real server on a loopback port (the tiny model), an authenticated HTTP client,
and helpers to read the Prometheus gauges and the process's memory."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.serving.conftest import API_KEY, running_server, server_settings

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ALLOWED_HOST = "127.0.0.2"


def metric(text: str, name: str) -> float:
    """The value of an unlabelled Prometheus sample `name` in `text`."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"metric {name} is missing"
    return float(found.group(1))


def rss_mb() -> float:
    """Resident memory of this process and its children (the engine cores of the servers it started)."""
    me = psutil.Process()
    return sum(p.memory_info().rss for p in (me, *me.children(recursive=True))) / 2**20


def is_openai_error(body: object) -> bool:
    """True for {"error": {"message": str, "type": str, "param": str|None, "code": str|None}}."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    error = body["error"]
    return (
        set(error) == {"message", "type", "param", "code"}
        and isinstance(error["message"], str)
        and bool(error["message"])
        and isinstance(error["type"], str)
        and (error["param"] is None or isinstance(error["param"], str))
        and (error["code"] is None or isinstance(error["code"], str))
    )


@pytest.fixture(scope="package")
def server(tiny_model_dir) -> Iterator[tuple[str, object]]:
    """(base URL, uvicorn server) of the service over the tiny model. The only internal host image URLs may
    reach is 127.0.0.2 (ALLOWED_HOST, where the SSRF tests run a redirecting server); 127.0.0.1 is forbidden."""
    settings = server_settings(
        tiny_model_dir,
        fetch_allow_hosts=(ALLOWED_HOST,),
        max_image_bytes=2_000_000,
        max_body_bytes=4_000_000,
        max_image_pixels=4_000_000,
    )
    with running_server(settings) as started:
        yield started


@pytest.fixture(scope="package")
def base_url(server) -> str:
    return server[0]


@pytest.fixture(scope="package")
def http(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=60) as client:
        yield client


def chat_body(model: str, content: object, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def image_message(url: str, text: str = "What is in the image?") -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]


@pytest.fixture(scope="package")
def model_name(tiny_model_dir) -> str:
    return tiny_model_dir.name
