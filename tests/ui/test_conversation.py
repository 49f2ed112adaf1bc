"""Pure pieces of the page: textbox values to turns, turns to Chatbot messages, stream chunks to events."""

from __future__ import annotations

import base64

import pytest
from openai.types.chat import ChatCompletionChunk

from ui.client import Turn, describe_error, image_data_url, parse_chunk, to_api_messages
from ui.conversation import EMPTY_ANSWER, OCR_TITLE, to_chatbot, user_turn
from ui.examples import EXAMPLES, example_inputs


def chunk(**extra) -> ChatCompletionChunk:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": []}
    return ChatCompletionChunk.model_validate({**body, **extra})


def test_user_turn_from_textbox_values():
    assert user_turn({"text": "  hi ", "files": []}) == Turn("user", "hi")
    turn = user_turn({"text": "", "files": ["/tmp/a.png", {"path": "/tmp/b.png"}]})
    assert turn == Turn("user", "", images=("/tmp/a.png", "/tmp/b.png"))
    assert user_turn({"text": "  ", "files": []}) is None and user_turn(None) is None


def test_chatbot_shows_images_ocr_answers_and_errors():
    turns = [
        Turn("user", "what is written?", images=("/tmp/a.png",)),
        Turn("assistant", "STOP", ocr_text="STOP 12"),
        Turn("user", "and here?", images=("/tmp/big.png",), failed=True),
        Turn("assistant", error="image is too large (HTTP 400)", failed=True),
        Turn("user", "again"),
        Turn("assistant", ""),
    ]
    messages = to_chatbot(turns)
    assert messages[0] == {"role": "user", "content": [{"path": "/tmp/a.png"}, "what is written?"]}
    assert messages[1]["metadata"]["title"] == OCR_TITLE and messages[1]["content"] == "STOP 12"
    assert messages[2] == {"role": "assistant", "content": "STOP"}
    assert messages[4] == {"role": "assistant", "content": "⚠️ Error: image is too large (HTTP 400)"}
    assert messages[-1]["content"] == EMPTY_ANSWER
    assert to_chatbot(turns, streaming=True)[-1]["role"] == "user"  # pending dots, not "empty answer"


def test_api_messages_carry_history_images_as_data_urls(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8fake")
    turns = [Turn("user", "q1", images=(str(image),)), Turn("assistant", "a1"), Turn("user", "q2")]
    messages = to_api_messages(turns, system="be brief")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    url = messages[1]["content"][0]["image_url"]["url"]
    assert url == "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8fake").decode()
    assert messages[1]["content"][1] == {"type": "text", "text": "q1"}
    assert messages[3]["content"] == [{"type": "text", "text": "q2"}]


def test_parse_chunk_reads_text_finish_and_ocr_text():
    delta = chunk(choices=[{"index": 0, "delta": {"content": "hel"}, "finish_reason": None}])
    assert parse_chunk(delta).text == "hel"
    done = chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "length"}])
    assert parse_chunk(done).finish_reason == "length"
    assert parse_chunk(chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}])) is None
    assert parse_chunk(chunk(ocr_text="PULL\nSTOP")).ocr_text == "PULL\nSTOP"  # when a server sends it
    assert parse_chunk(chunk(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})) is None


def test_errors_without_a_body_still_read_well():
    import httpx
    import openai

    request = httpx.Request("POST", "http://x/v1/chat/completions")
    response = httpx.Response(502, request=request, text="<html>bad gateway</html>")
    error = openai.APIStatusError("Error code: 502", response=response, body=None)
    assert describe_error(error, "http://x/v1") == "the API answered HTTP 502; check the server's log"
    stream_error = openai.APIError("boom", request, body={"message": "the engine stopped; retry it"})
    assert describe_error(stream_error, "http://x/v1") == "the engine stopped; retry it"


def test_examples_render_once_into_a_directory(tmp_path):
    values = example_inputs(tmp_path)
    assert [v["text"] for v in values] == [e.question for e in EXAMPLES]
    files = sorted(tmp_path.iterdir())
    assert len(files) == len(EXAMPLES) and all(f.stat().st_size < 200_000 for f in files)
    stamps = [f.stat().st_mtime_ns for f in files]
    example_inputs(tmp_path)
    assert [f.stat().st_mtime_ns for f in sorted(tmp_path.iterdir())] == stamps


def test_image_data_url_defaults_to_png_for_unknown_names(tmp_path):
    blob = tmp_path / "pasted"
    blob.write_bytes(b"\x89PNG")
    assert image_data_url(blob).startswith("data:image/png;base64,")


@pytest.mark.parametrize("path", ["ui", "/ui/", ""])
def test_mount_path_is_checked(path):
    from fastapi import FastAPI

    from ui.client import ChatClient, ClientConfig
    from ui.mount import mount_ui

    with pytest.raises(ValueError, match="path must start with /"):
        mount_ui(FastAPI(), ChatClient(ClientConfig(base_url="http://127.0.0.1:1/v1")), path=path)
