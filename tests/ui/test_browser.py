"""The chat page in a real headless Chromium, served by a real API server on a loopback port."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.ui.browser import ChatPage, words
from tests.ui.conftest import API_KEY, ask_api
from ui.client import ChatOptions, Turn


@pytest.fixture
def chat(browser, ui_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield ChatPage(context.new_page(), ui_server.url + "/ui/")
    finally:
        context.close()


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def images_received(url: str) -> float:
    return metric(url, "assistant_images_total")


def test_ask_refused_image_then_ask_again(chat, ui_server, scenes):
    question = "How many objects are there?"
    answer = chat.ask(question, [scenes["small"]])
    events = ask_api(ui_server.client, [Turn("user", question, images=(str(scenes["small"]),))])
    expected = "".join(e.text for e in events)
    assert words(answer) and words(answer) == words(expected)  # the API's own answer, streamed in
    assert chat.page.locator('#chat [data-testid="user"] img').count() == 1

    error = chat.ask("And this one?", [scenes["large"]])
    assert error.startswith("⚠️ Error:") and "pixel" in error and "HTTP 400" in error
    assert "Traceback" not in chat.page.inner_text("body")

    before = images_received(ui_server.url)
    follow_up = chat.ask("What colour is it?")
    assert words(follow_up) and not follow_up.startswith("⚠️")
    # the history went back with the question: the first turn's image again, the refused one left out
    assert images_received(ui_server.url) - before == 1
    assert len(chat.bot_messages()) == 3 and chat.user_messages() == 5  # 2 images + 3 questions
    shot = chat.screenshot("chat.png")
    assert shot.stat().st_size > 10_000


def test_drop_and_paste_attach_images(chat, ui_server, scenes):
    chat.drop_or_paste(scenes["small"], "drop")
    chat.page.locator("#message img").first.wait_for()
    chat.drop_or_paste(scenes["second"], "paste")
    chat.page.locator("#message img").nth(1).wait_for()
    before = images_received(ui_server.url)
    answer = chat.ask("How many objects are there?")
    assert words(answer) and not answer.startswith("⚠️")
    assert images_received(ui_server.url) - before == 2
    assert chat.page.locator('#chat [data-testid="user"] img').count() == 2


@pytest.mark.parametrize("clear", ["#clear", '#chat button[aria-label="Clear"]'])
def test_example_then_clear_starts_a_new_conversation(chat, ui_server, clear):
    chat.page.get_by_text("How many objects are there?").first.click()  # the first example
    chat.page.locator("#message img").first.wait_for()
    assert chat.textarea.input_value() == "How many objects are there?"
    chat.textarea.press("Enter")
    chat.wait_idle(1)
    assert chat.page.locator('#chat [data-testid="user"] img').count() == 1
    chat.page.locator(clear).click()
    chat.page.wait_for_function("() => !document.querySelector('#chat [data-testid=\"user\"]')")
    before = images_received(ui_server.url)
    chat.ask("hello")
    assert images_received(ui_server.url) == before  # nothing from the cleared conversation was sent
    assert len(chat.bot_messages()) == 1


@pytest.mark.slow  # 20+ s of streaming; the page's other controls are driven in the default run
def test_stop_ends_a_long_answer(chat, ui_server):
    slider = chat.page.locator("#max-tokens input[type=number]")
    slider.fill("2048")
    slider.press("Enter")
    chat.record_bot_texts()
    chat.textarea.fill("hello")
    chat.textarea.press("Enter")
    chat.page.wait_for_function("() => window.__seen.length >= 2")  # the answer is streaming in
    chat.page.locator("#stop").click()
    chat.wait_idle(1)  # the textbox unlocks at once; updates already on their way may still render
    stopped, previous = chat.bot_messages()[-1], None
    for _ in range(25):  # settled: the same text twice, 200 ms apart (5 s at most)
        if stopped == previous:
            break
        chat.page.wait_for_timeout(200)
        stopped, previous = chat.bot_messages()[-1], stopped
    chat.page.wait_for_timeout(1000)
    assert chat.bot_messages()[-1] == stopped  # nothing more arrives
    assert metric(ui_server.url, "assistant_requests_running") == 0  # the server stopped generating too
    whole = ask_api(
        ui_server.client, [Turn("user", "hello")], ChatOptions(temperature=0.0, max_tokens=2048, ocr="off")
    )
    assert 0 < len(words(stopped)) < len(words("".join(e.text for e in whole)))
