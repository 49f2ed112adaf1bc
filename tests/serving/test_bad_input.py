"""Every bad input of the issue gets its status and an OpenAI-shaped error, and the server keeps serving."""

from __future__ import annotations

import base64
import io
import json
import random

import httpx
import pytest
from PIL import Image

from tests.serving.conftest import API_KEY, data_url, png_bytes, red_square

ERROR_KEYS = {"message", "type", "param", "code"}


def post(http: httpx.Client, body, **kwargs) -> httpx.Response:
    return http.post("/v1/chat/completions", json=body, **kwargs)


def chat(model: str, *parts_or_text, **extra) -> dict:
    if len(parts_or_text) == 1 and isinstance(parts_or_text[0], str):
        content = parts_or_text[0]
    else:
        content = [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts_or_text]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["message"] and "Traceback" not in error["message"] and "/tmp" not in error["message"]
    assert "site-packages" not in response.text
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture
def still_serves(http, model_name):
    """After the test: the server answers a real completion."""
    yield
    response = post(http, chat(model_name, "how many objects are there?"))
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] is not None


pytestmark = pytest.mark.usefixtures("still_serves")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
@pytest.mark.parametrize("route", ["/v1/models", "/ready", "/metrics"])
def test_api_key_required_everywhere_but_liveness(server, route, headers):
    assert_error(httpx.get(server + route, headers=headers), 401, "invalid_api_key")
    assert httpx.get(server + "/health").status_code == 200


def test_chat_without_key_is_401(server, model_name):
    response = httpx.post(server + "/v1/chat/completions", json=chat(model_name, "hi"))
    assert_error(response, 401, "invalid_api_key")


def test_body_over_cap_with_content_length(http, model_name):
    huge = chat(model_name, "x" * 1_100_000)
    assert_error(post(http, huge), 413, "request_too_large")


def test_body_over_cap_chunked(http, model_name):
    payload = json.dumps(chat(model_name, "x" * 1_100_000)).encode()

    def chunks():
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    response = http.post(
        "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request_too_large")


def test_more_images_than_the_cap(http, model_name):
    url = data_url(png_bytes(red_square()))
    assert_error(post(http, chat(model_name, *[image(url)] * 4, "count")), 400, "too_many_images")


def test_image_bytes_over_cap(http, model_name):
    noise = Image.frombytes("RGB", (300, 300), random.Random(0).randbytes(300 * 300 * 3))
    data = png_bytes(noise)
    assert len(data) > 200_000
    assert_error(post(http, chat(model_name, image(data_url(data)), "hi")), 400)


def test_pixels_over_cap(http, model_name):
    big = png_bytes(Image.new("RGB", (1500, 1000), (255, 255, 255)))  # 1.5 M pixels, a small PNG
    assert_error(post(http, chat(model_name, image(data_url(big)), "hi")), 400, "invalid_image")


def test_decompression_bomb_rejected_from_the_header(http, model_name):
    bomb = png_bytes(Image.new("1", (20000, 20000)))  # 400 M pixels in a few tens of KB
    assert len(bomb) < 200_000
    error = assert_error(post(http, chat(model_name, image(data_url(bomb)), "hi")), 400, "invalid_image")
    assert "pixels" in error["message"] or "20000" in error["message"]


@pytest.mark.parametrize("size", [(2, 50), (3000, 10)])
def test_image_side_too_small_or_too_large(http, model_name, size):
    assert_error(post(http, chat(model_name, image(data_url(png_bytes(Image.new("RGB", size)))), "hi")), 400)


def test_bytes_that_are_not_an_image(http, model_name):
    assert_error(
        post(http, chat(model_name, image(data_url(b"not an image at all")), "hi")), 400, "invalid_image"
    )


@pytest.mark.parametrize("url", ["data:image/png;base64,@@@notbase64!!", "data:image/png,rawdata", "data:"])
def test_bad_base64_and_bad_data_urls(http, model_name, url):
    assert_error(post(http, chat(model_name, image(url), "hi")), 400)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/", "javascript:alert(1)", "/etc/passwd"],
)
def test_only_data_and_http_schemes(http, model_name, url):
    error = assert_error(post(http, chat(model_name, image(url), "hi")), 400)
    assert "passwd" not in error["message"]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.2",
        "[::1]",
        "10.0.0.1",
        "169.254.169.254",
        "192.168.1.1",
        "[::ffff:127.0.0.2]",
        "[fe80::1]",
        "0.0.0.0",
    ],
)
def test_internal_addresses_refused(http, model_name, image_server, host):
    port = image_server.rsplit(":", 1)[1]
    error = assert_error(post(http, chat(model_name, image(f"http://{host}:{port}/red.png"), "hi")), 400)
    assert "internal" in error["message"]


def test_redirect_to_internal_address_refused(http, model_name, image_server):
    error = assert_error(post(http, chat(model_name, image(image_server + "/redirect-internal"), "hi")), 400)
    assert "internal" in error["message"]


@pytest.mark.parametrize("path", ["/redirect-loop", "/big", "/text", "/missing"])
def test_bad_fetches(http, model_name, image_server, path):
    assert_error(post(http, chat(model_name, image(image_server + path), "hi")), 400)


def test_fetch_timeout(http, model_name, image_server):
    error = assert_error(post(http, chat(model_name, image(image_server + "/slow"), "hi")), 400)
    assert "took over" in error["message"]


def test_unresolvable_host(http, model_name):
    assert_error(post(http, chat(model_name, image("http://no-such-host.invalid/a.png"), "hi")), 400)


def test_prompt_plus_max_tokens_over_context(http, model_name):
    error = assert_error(
        post(http, {**chat(model_name, "hi"), "max_tokens": 600}), 400, "context_length_exceeded"
    )
    assert "512" in error["message"]


def test_literal_image_token_in_text_opens_no_slot(http, model_name):
    plain = post(http, chat(model_name, "look: image"))
    typed = post(http, chat(model_name, "look: <image>"))
    assert typed.status_code == 200
    # "<image>" is escaped to text: a handful of tokens, not the ~80 an image slot expands to.
    assert typed.json()["usage"]["prompt_tokens"] < plain.json()["usage"]["prompt_tokens"] + 10


def test_malformed_json(http):
    response = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "patch",
    [
        {"messages": "hello"},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "hi"}]},
        {"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]},
        {"max_tokens": "lots"},
        {"max_tokens": 0},
        {"temperature": 5},
        {"top_p": 0},
        {"n": 4},
        {"n": 0},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"ocr": "sometimes"},
        {"stream": "maybe"},
    ],
)
def test_wrong_types_and_invalid_values(http, model_name, patch):
    assert_error(post(http, {**chat(model_name, "hi"), **patch}), 400)


def test_image_in_an_assistant_message(http, model_name):
    body = chat(model_name, "hi")
    url = data_url(png_bytes(red_square()))
    body["messages"] = [{"role": "assistant", "content": [image(url)]}, {"role": "user", "content": "hi"}]
    assert_error(post(http, body), 400)


def test_unknown_model_is_404(http):
    assert_error(post(http, chat("gpt-17", "hi")), 404, "model_not_found")


def test_unknown_route_and_method(http):
    assert_error(http.get("/v1/nothing"), 404)
    assert_error(http.get("/v1/chat/completions"), 405)


def test_body_not_an_object(http):
    assert_error(http.post("/v1/chat/completions", json=[1, 2]), 400)
    assert_error(http.post("/v1/chat/completions", content=base64.b64encode(io.BytesIO(b"x").read())), 400)
