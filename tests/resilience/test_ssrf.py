"""SSRF battery: image URLs aimed at internal addresses in every spelling, and redirects from an allow-listed
host to forbidden ones. A listener on this machine's port (all IPv4 and IPv6 addresses) counts connections:
none may arrive, and every request is refused with a 400 in the OpenAI error shape."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.resilience.conftest import ALLOWED_HOST, chat_body, image_message, is_openai_error
from tests.serving.conftest import png_bytes, red_square


class Watcher:
    """Accepts and counts TCP connections on one port, on 0.0.0.0 and (where the host has IPv6) on ::."""

    def __init__(self) -> None:
        self.connections = 0
        self.sockets = [socket.create_server(("0.0.0.0", 0))]
        self.port = self.sockets[0].getsockname()[1]
        if socket.has_ipv6:
            try:
                self.sockets.append(socket.create_server(("::", self.port), family=socket.AF_INET6))
            except OSError:
                pass
        for sock in self.sockets:
            sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, args=(s,), daemon=True) for s in self.sockets]
        for thread in self.threads:
            thread.start()

    def _accept(self, sock: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(2)
        for sock in self.sockets:
            sock.close()


@pytest.fixture(scope="module")
def watcher() -> Iterator[Watcher]:
    w = Watcher()
    yield w
    w.close()


def loopback_names() -> list[str]:
    """Host names that resolve to 127.0.0.1 here (localhost, and /etc/hosts aliases such as the host name)."""
    names = []
    for name in ("localhost", socket.gethostname(), "localhost.localdomain", "ip6-localhost"):
        try:
            if socket.gethostbyname(name).startswith("127.") and name not in names:
                names.append(name)
        except OSError:
            pass
    return names


def forbidden_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/a.png",  # loopback
        f"http://127.1:{port}/a.png",  # short dotted form
        f"http://2130706433:{port}/a.png",  # decimal
        f"http://0177.0.0.1:{port}/a.png",  # octal
        f"http://0x7f.0.0.1:{port}/a.png",  # hex
        f"http://0.0.0.0:{port}/a.png",  # unspecified, reaches this host on Linux
        f"http://[::1]:{port}/a.png",  # IPv6 loopback
        f"http://[::ffff:127.0.0.1]:{port}/a.png",  # IPv4-mapped IPv6
        f"http://[::ffff:7f00:1]:{port}/a.png",  # the same, hex spelling
        f"http://[64:ff9b::7f00:1]:{port}/a.png",  # NAT64 of 127.0.0.1
        f"http://[2002:7f00:1::]:{port}/a.png",  # 6to4 of 127.0.0.1
        f"http://[::]:{port}/a.png",  # IPv6 unspecified
        f"http://user:pw@127.0.0.1:{port}/a.png",  # credentials in front of loopback
        f"http://example.com@127.0.0.1:{port}/a.png",  # a public-looking name before '@'
        "http://169.254.169.254/latest/meta-data/",  # link-local cloud metadata
        "http://[fe80::1]/a.png",  # IPv6 link-local
        "http://10.0.0.1/a.png",  # private ranges
        "http://172.16.0.1/a.png",
        "http://192.168.1.1/a.png",
        "http://100.64.0.1/a.png",  # carrier-grade NAT
        "http://[fd00::1]/a.png",  # IPv6 unique local
        "http://224.0.0.1/a.png",  # multicast
        f"file:///etc/passwd",  # noqa: F541 - other schemes
        f"ftp://127.0.0.1:{port}/a.png",
        f"gopher://127.0.0.1:{port}/_GET",
        f"dict://127.0.0.1:{port}/info",
        "javascript:alert(1)",
        "//127.0.0.1/a.png",  # scheme-relative
    ] + [f"http://{name}:{port}/a.png" for name in loopback_names()]  # DNS names resolving to 127.0.0.1


class Redirector(BaseHTTPRequestHandler):
    """On the allow-listed host: /ok.png serves an image, /to?url=X redirects to X."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/ok.png":
            body = png_bytes(red_square())
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(302)
        self.send_header("Location", self.path.split("?url=", 1)[1] if "?url=" in self.path else "/")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    httpd = ThreadingHTTPServer((ALLOWED_HOST, 0), Redirector)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://{ALLOWED_HOST}:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def refused(http, model_name: str, url: str) -> str | None:
    """None when the URL is refused with a 400 in the OpenAI shape; otherwise what happened."""
    response = http.post("/v1/chat/completions", json=chat_body(model_name, image_message(url)))
    if response.status_code != 400 or not is_openai_error(response.json()):
        return f"{url}: {response.status_code} {response.text[:150]}"
    return None


def test_internal_urls_are_refused_and_never_connected(http, model_name, watcher):
    urls = forbidden_urls(watcher.port)
    assert len(urls) >= 25
    failures = [f for f in (refused(http, model_name, url) for url in urls) if f]
    assert not failures, "\n".join(failures)
    assert watcher.connections == 0


def test_redirects_from_an_allowed_host_to_forbidden_ones_are_refused(http, model_name, watcher, redirector):
    ok = http.post("/v1/chat/completions", json=chat_body(model_name, image_message(redirector + "/ok.png")))
    assert ok.status_code == 200, ok.text  # the allow-listed host itself is reachable
    targets = [u for u in forbidden_urls(watcher.port) if u.startswith(("http://", "file:", "ftp:"))]
    failures = [f for f in (refused(http, model_name, f"{redirector}/to?url={t}") for t in targets) if f]
    assert not failures, "\n".join(failures)
    assert watcher.connections == 0


def test_the_watcher_counts_connections():
    """The control: a direct connection to the watched port is counted, so a zero above means zero."""
    w = Watcher()
    try:
        for host in ("127.0.0.1", "127.0.0.3"):
            socket.create_connection((host, w.port), timeout=2).close()
        deadline = time.monotonic() + 2
        while w.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.connections == 2
    finally:
        w.close()
