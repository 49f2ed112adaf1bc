"""ChatClient against the real API server (no browser): streaming, history with images, OCR modes, errors."""

from __future__ import annotations

import re
import socket

import httpx
import pytest
from openai import OpenAI

from tests.ui.conftest import API_KEY, ask_api, free_socket
from ui.client import ChatClient, ChatError, ChatOptions, ClientConfig, Turn, to_api_messages


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def client_for(url: str, **overrides) -> ChatClient:
    return ChatClient(ClientConfig(**{"base_url": url + "/v1", "api_key": API_KEY, **overrides}))


def test_stream_matches_the_official_client(ui_server, scenes, ui_model_dir):
    turns = [Turn("user", "How many objects are there?", images=(str(scenes["small"]),))]
    events = ask_api(ui_server.client, turns, ChatOptions(temperature=0.0, max_tokens=10, ocr="off"))
    official = OpenAI(base_url=ui_server.url + "/v1", api_key=API_KEY, max_retries=0)
    whole = official.chat.completions.create(
        model=ui_model_dir.name, messages=to_api_messages(turns), max_tokens=10, temperature=0.0
    )
    assert len([e for e in events if e.text]) > 1  # streamed in pieces
    assert "".join(e.text for e in events) == whole.choices[0].message.content
    assert events[-1].finish_reason == whole.choices[0].finish_reason


def test_model_defaults_to_the_first_listed(ui_server, ui_model_dir):
    client = client_for(ui_server.url)
    ask_api(client, [Turn("user", "hi")])
    assert client.config.model is None and client._model == ui_model_dir.name


def test_history_sends_earlier_images_and_skips_failed_turns(ui_server, scenes):
    small, large = str(scenes["small"]), str(scenes["large"])
    turns = [
        Turn("user", "How many objects are there?", images=(small,)),
        Turn("assistant", "one"),
        Turn("user", "and here?", images=(large,), failed=True),
        Turn("assistant", error="too large", failed=True),
        Turn("user", "What colour is it?", images=(small,)),
    ]
    before = metric(ui_server.url, "assistant_images_total")
    assert "".join(e.text for e in ask_api(ui_server.client, turns))
    assert metric(ui_server.url, "assistant_images_total") - before == 2


def test_ocr_mode_reaches_the_server(ui_server, scenes):
    turns = [Turn("user", "What words are written in the image?", images=(str(scenes["small"]),))]
    before = metric(ui_server.url, "assistant_ocr_seconds_count")
    ask_api(ui_server.client, turns, ChatOptions(temperature=0.0, max_tokens=4, ocr="off"))
    assert metric(ui_server.url, "assistant_ocr_seconds_count") == before
    ask_api(ui_server.client, turns, ChatOptions(temperature=0.0, max_tokens=4, ocr="on"))
    assert metric(ui_server.url, "assistant_ocr_seconds_count") == before + 1


def test_oversize_image_is_a_readable_error(ui_server, scenes):
    with pytest.raises(ChatError) as info:
        ask_api(ui_server.client, [Turn("user", "hi", images=(str(scenes["large"]),))])
    message = str(info.value)
    assert (
        "pixel" in message
        and "(HTTP 400)" in message
        and message.endswith("attach a smaller image, or a PNG, JPEG, GIF or WebP one")
    )


def test_not_an_image_is_a_readable_error(ui_server, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("hello, I am not an image")
    with pytest.raises(ChatError, match=r"not a readable image .*\(HTTP 400\)"):
        ask_api(ui_server.client, [Turn("user", "hi", images=(str(fake),))])


def test_missing_attachment_is_a_readable_error(ui_server, tmp_path):
    with pytest.raises(ChatError, match="can no longer be read; attach it again"):
        ask_api(ui_server.client, [Turn("user", "hi", images=(str(tmp_path / "gone.png"),))])


def test_wrong_key_says_which_flag_to_set(ui_server):
    client = client_for(ui_server.url, api_key="wrong", model="anything")
    with pytest.raises(
        ChatError, match=r"valid API key is required.*\(HTTP 401\); start the UI with .*--api-key"
    ):
        ask_api(client, [Turn("user", "hi")])
    with pytest.raises(ChatError, match=r"HTTP 401"):  # the model lookup fails the same readable way
        ask_api(client_for(ui_server.url, api_key=None), [Turn("user", "hi")])


def test_unknown_model_names_the_served_one(ui_server, ui_model_dir):
    with pytest.raises(ChatError, match=rf"use '{ui_model_dir.name}'.*\(HTTP 404\)"):
        ask_api(client_for(ui_server.url, model="gpt-17"), [Turn("user", "hi")])


def test_connection_refused_names_the_address():
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there now
    with pytest.raises(
        ChatError, match=rf"cannot reach the API at {url}/v1; check that the server is running"
    ):
        ask_api(client_for(url, model="m"), [Turn("user", "hi")])


def test_silent_server_times_out_readably():
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts connections, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = client_for(url, model="m", timeout_s=0.5)
        with pytest.raises(ChatError, match=r"did not answer within 0.5 s; ask again or lower max tokens"):
            ask_api(client, [Turn("user", "hi")])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClientConfig(base_url="localhost:8000"), "must start with http:// or https://"),
        (lambda: ClientConfig(base_url="http://x", timeout_s=0), "timeout_s must be > 0"),
        (lambda: ChatOptions(temperature=3.0), r"temperature must be in \[0, 2\]"),
        (lambda: ChatOptions(max_tokens=0), "max_tokens must be >= 1"),
        (lambda: ChatOptions(ocr="maybe"), r"ocr must be one of \['off', 'auto', 'on'\]"),
    ],
)
def test_settings_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()
