"""A real API server on a loopback port serving the tiny model, with the chat page mounted at /ui."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving.app import create_app
from serving.settings import ServeSettings
from tests.serving.conftest import free_socket, serving_app
from ui.client import ChatClient, ChatOptions, StreamEvent, Turn
from ui.mount import local_config, mount_ui

API_KEY = "ui-test-key"
MAX_PIXELS = 50_000  # a 128 x 128 toy-world scene fits; a 336 x 336 one does not
TEST_OPTIONS = ChatOptions(temperature=0.0, max_tokens=12, ocr="off")


@dataclass(frozen=True)
class UIServer:
    url: str  # http://127.0.0.1:PORT
    client: ChatClient


@pytest.fixture(scope="session")
def ui_model_dir(tmp_path_factory, tiny_spec) -> Path:
    """The tiny test model with a 4096-token context and 8 layers, so an answer runs long enough for Stop to
    land before it ends (512 positions at ~2 ms a token finished before the click; with the engine in a
    process of its own, 2048 tokens of the 2-layer model did too). Seed 1: seed 0's 8-layer model answers
    the test questions with bytes that are not text."""
    from dataclasses import replace

    from assistant.modeling import build_model, save_model

    language = {**tiny_spec.language, "max_position_embeddings": 4096, "num_hidden_layers": 8}
    spec = replace(tiny_spec, language=language, seed=1)
    return save_model(*build_model(spec), tmp_path_factory.mktemp("ui-model") / "tiny-llava-next-4k")


@pytest.fixture(scope="session")
def ui_server(ui_model_dir: Path) -> Iterator[UIServer]:
    """`assistant serve` as the lead wires it: create_app(settings) with mount_ui at /ui, on a free port."""
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = ServeSettings(
        model=str(ui_model_dir),
        device="cpu",
        port=port,
        api_keys=(API_KEY,),
        ocr="off",
        max_image_pixels=MAX_PIXELS,
        default_max_tokens=12,
        drain_timeout_s=5.0,
    )
    client = ChatClient(local_config(settings.host, port, settings.api_keys))
    app = mount_ui(create_app(settings), client, path="/ui", defaults=TEST_OPTIONS)
    with serving_app(app, sock):
        yield UIServer(url=f"http://127.0.0.1:{port}", client=client)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """Toy-world scenes as PNG files: 'small' (128 x 128, under the pixel cap) and 'large' (over it)."""
    from assistant.toyworld import PRESETS, generate_scene, render

    out = tmp_path_factory.mktemp("scenes")
    paths = {}
    for name, preset, seed in (("small", "tiny", 3), ("second", "tiny", 5), ("large", "standard", 2)):
        image = render(generate_scene(seed, PRESETS[preset]))
        paths[name] = out / f"{name}.png"
        image.save(paths[name])
    return paths


def ask_api(client: ChatClient, turns: list[Turn], options: ChatOptions = TEST_OPTIONS) -> list[StreamEvent]:
    """Every stream event of one answer, gathered on a fresh event loop in a worker thread (Playwright's sync
    API holds a running loop on the main thread)."""

    async def collect() -> list[StreamEvent]:
        return [event async for event in client.stream(turns, options)]

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, collect()).result()


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the whole session (the test fails with install advice when it is missing)."""
    from tests.ui.browser import chromium

    with chromium() as browser:
        yield browser
