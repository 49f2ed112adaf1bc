"""`assistant ui`: the page on its own, in front of a running API server, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from assistant.cli import main
from tests.ui.browser import ChatPage, words
from tests.ui.conftest import API_KEY, free_socket


@pytest.fixture
def standalone(ui_server) -> Iterator[str]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    command = [
        sys.executable,
        "-m",
        "assistant",
        "ui",
        "--api-base",
        ui_server.url + "/v1",
        "--port",
        str(port),
    ]
    env = {**os.environ, "ASSISTANT_UI_API_KEY": API_KEY, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"`assistant ui` exited with {process.returncode}: {process.stdout.read()}")
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("`assistant ui` did not start within 90 s")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_standalone_page_fronts_the_api(standalone, browser, scenes):
    page = browser.new_page()
    try:
        chat = ChatPage(page, standalone + "/")
        answer = chat.ask("How many objects are there?", [scenes["small"]])
        assert words(answer) and not answer.startswith("⚠️")
    finally:
        page.close()


def test_bad_api_base_is_one_line(capsys):
    assert main(["ui", "--api-base", "localhost:8000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: base_url must start with http:// or https://") and err.count("\n") == 1
