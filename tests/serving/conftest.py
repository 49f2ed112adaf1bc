"""Real servers on loopback ports: this service under uvicorn in a thread, and a small image server."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import uvicorn
from openai import OpenAI
from PIL import Image

from serving.app import create_app
from serving.settings import ServeSettings

API_KEY = "test-key"


def free_socket() -> socket.socket:
    """A socket bound to a free loopback port; uvicorn serves on it, so the port is never raced for."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving_app(app, sock: socket.socket, drain_s: float | None = 5.0) -> Iterator[uvicorn.Server]:
    """Run `app` under uvicorn in a thread on `sock` until the block ends."""
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=int(drain_s or 0) or None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def running_server(settings: ServeSettings) -> Iterator[tuple[str, uvicorn.Server]]:
    """Start create_app(settings) under uvicorn on a free loopback port; yield (base URL, server)."""
    sock = free_socket()
    with serving_app(create_app(settings), sock, settings.drain_timeout_s) as server:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def server_settings(model_dir, **overrides) -> ServeSettings:
    values = dict(
        model=None if model_dir is None else str(model_dir),
        device="cpu",
        api_keys=(API_KEY,),
        fetch_allow_hosts=("127.0.0.1",),
        fetch_timeout_s=2.0,
        ocr="off",
        max_images=3,
        max_body_bytes=1_000_000,
        max_image_bytes=200_000,
        max_image_pixels=1_000_000,
        min_image_side=4,
        max_image_side=2000,
        default_max_tokens=8,
        max_n=3,
        drain_timeout_s=10.0,
    )
    values.update(overrides)
    return ServeSettings(**values)


@pytest.fixture(scope="session")
def server(tiny_model_dir) -> Iterator[str]:
    with running_server(server_settings(tiny_model_dir)) as (url, _):
        yield url


@pytest.fixture(scope="session")
def client(server) -> OpenAI:
    return OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def model_name(client) -> str:
    return client.models.list().data[0].id


def red_square(size: tuple[int, int] = (48, 32)) -> Image.Image:
    image = Image.new("RGB", size, (240, 240, 240))
    image.paste((220, 30, 30), (4, 4, size[0] // 2, size[1] // 2))
    return image


class _ImageHandler(BaseHTTPRequestHandler):
    """/red.png, /blue.png, /redirect (to /red.png), /redirect-internal (to a non-allowed loopback address),
    /redirect-loop, /big (over the byte cap), /slow (over the time cap), /text (not an image), /missing (404)."""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        routes = {
            "/red.png": lambda: self._send(png_bytes(red_square())),
            "/blue.png": lambda: self._send(png_bytes(Image.new("RGB", (40, 40), (20, 20, 220)))),
            "/redirect": lambda: self._redirect("/red.png"),
            "/redirect-internal": lambda: self._redirect(f"http://127.0.0.2:{port}/red.png"),
            "/redirect-loop": lambda: self._redirect("/redirect-loop"),
            "/big": lambda: self._send(b"\x89PNG" + b"\0" * 400_000),
            "/slow": self._slow,
            "/text": lambda: self._send(b"hello, I am not an image", "text/plain"),
        }
        routes.get(self.path, lambda: self.send_error(404))()

    def _send(self, body: bytes, mime: str = "image/png") -> None:
        self.send_response(200)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _slow(self) -> None:
        time.sleep(4)
        self._send(png_bytes(red_square()))


@pytest.fixture(scope="session")
def image_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
