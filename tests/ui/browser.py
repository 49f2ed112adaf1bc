"""Headless Chromium (Debian's `chromium`) driven by Playwright, and helpers for the chat page."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("UI_ARTIFACTS", Path(__file__).parent / "artifacts"))
TIMEOUT_MS = 60_000


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium; fails (never skips) with how to install it when it is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}; install it with `apt-get install -y chromium` "
            "(Debian/Ubuntu) or point CHROMIUM_PATH at a Chromium binary",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def words(text: str) -> str:
    """Letters and digits only: what survives Markdown rendering of any model output."""
    return re.sub(r"[\W_]+", "", text)


class ChatPage:
    """The chat page at /ui in one browser tab."""

    def __init__(self, page, url: str) -> None:
        self.page = page
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        self.textarea = page.locator("#message textarea")
        self.textarea.wait_for()

    def drop_or_paste(self, image: Path, how: str) -> None:
        """Drop an image file on the message box, or paste it into the text area, as a user's browser does."""
        data = list(image.read_bytes())
        self.page.evaluate(
            """([data, name, how]) => {
                const file = new File([new Uint8Array(data)], name, {type: 'image/png'});
                const transfer = new DataTransfer();
                transfer.items.add(file);
                const area = document.querySelector('#message textarea');
                const init = {bubbles: true, cancelable: true};
                if (how === 'drop') {
                    for (const type of ['dragenter', 'dragover', 'drop']) {
                        area.dispatchEvent(new DragEvent(type, {...init, dataTransfer: transfer}));
                    }
                } else {
                    area.focus();
                    area.dispatchEvent(new ClipboardEvent('paste', {...init, clipboardData: transfer}));
                }
            }""",
            [data, image.name, how],
        )

    def bot_messages(self) -> list[str]:
        return [t.strip() for t in self.page.locator('#chat [data-testid="bot"]').all_inner_texts()]

    def user_messages(self) -> int:
        return self.page.locator('#chat [data-testid="user"]').count()

    def attach(self, images: list[Path]) -> None:
        """Pick `images` with the file picker and wait for their thumbnails (the uploads are done)."""
        self.page.locator("#message input[type=file]").set_input_files([str(p) for p in images])
        self.page.locator("#message img").nth(len(images) - 1).wait_for()

    def ask(self, question: str, images: list[Path] = ()) -> str:
        """Attach `images`, send `question`, wait for the answer to finish; return the last bot message."""
        before = len(self.bot_messages())
        if images:
            self.attach(images)
        self.textarea.fill(question)
        self.textarea.press("Enter")
        self.wait_idle(before + 1)
        return self.bot_messages()[-1]

    def wait_idle(self, bot_count: int) -> None:
        """Wait until there are `bot_count` bot messages and the textbox is enabled again."""
        self.page.wait_for_function(
            """n => document.querySelectorAll('#chat [data-testid="bot"]').length >= n
                 && !document.querySelector('#message textarea').disabled""",
            arg=bot_count,
        )

    def record_bot_texts(self) -> None:
        """Start recording every distinct text the last bot message shows (to see the answer stream in)."""
        self.page.evaluate(
            """() => {
                window.__seen = [];
                const chat = document.querySelector('#chat');
                new MutationObserver(() => {
                    const bots = chat.querySelectorAll('[data-testid="bot"]');
                    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
                    if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
                }).observe(chat, {subtree: true, childList: true, characterData: true});
            }"""
        )

    def recorded_bot_texts(self) -> list[str]:
        return self.page.evaluate("() => window.__seen")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path
