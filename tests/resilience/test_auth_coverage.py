"""Auth coverage: walk every route of the app as `assistant serve` builds it (create_app plus the mounted /ui)
and check, on a real server, that each answers 401 without the API key, except an explicit public list."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from serving.cli import build_app
from tests.resilience.conftest import AUTH, is_openai_error
from tests.serving.conftest import API_KEY, free_socket, server_settings, serving_app

# Liveness for orchestrators, and FastAPI's schema and docs pages (they describe the API, they do not use it).
PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@pytest.fixture(scope="module")
def served(tiny_model_dir) -> Iterator[tuple[str, object]]:
    sock = free_socket()
    port = sock.getsockname()[1]
    app = build_app(server_settings(tiny_model_dir, port=port))  # exactly what `assistant serve` runs
    with serving_app(app, sock):
        yield f"http://127.0.0.1:{port}", app


def requests_for(routes, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) for every route: each method of an HTTP route, GET on a mount's root; routers included
    with `include_router` (FastAPI keeps them as included-router entries) are walked into."""
    found = []
    for route in routes:
        if hasattr(route, "original_router"):
            inner = prefix + (getattr(route.include_context, "prefix", "") or "")
            found += requests_for(route.original_router.routes, inner)
        elif isinstance(route, (APIRoute, Route)):
            path = prefix + route.path.replace("{", "").replace("}", "")  # a path parameter's value: its name
            found += [(method, path) for method in sorted(route.methods or {"GET"}) if method != "HEAD"]
        elif isinstance(route, Mount):
            found.append(("GET", prefix + route.path + "/"))
    return found


def test_every_route_needs_the_api_key_except_the_public_list(served):
    url, app = served
    requests = [r for r in requests_for(app.routes) if not r[1].startswith("/ui")]  # /ui: the test below
    paths = {path for _, path in requests}
    assert {"/v1/chat/completions", "/v1/models", "/metrics", "/ready", "/health"} <= paths
    open_routes, rejected = [], 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path in requests:
            bare = client.request(method, path, json={} if method == "POST" else None)
            keyed = client.request(method, path, json={} if method == "POST" else None, headers=AUTH)
            assert keyed.status_code != 401, f"{method} {path} refuses the right key"
            if path in PUBLIC:
                continue
            if bare.status_code == 401 and is_openai_error(bare.json()):
                rejected += 1
            else:
                open_routes.append(f"{method} {path} -> {bare.status_code}")
            wrong = client.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401 or f"{method} {path}" in " ".join(open_routes)
    print(f"FIGURE auth {len(requests)} route methods walked, {rejected} refused without the key")
    assert not open_routes, "routes answering without the API key: " + ", ".join(open_routes)


def test_the_mounted_ui_needs_the_api_key(served):
    """The page behind /ui calls the API with the server's key, so it asks for a key to log in first."""
    url, app = served
    assert ("GET", "/ui/") in requests_for(app.routes)
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/ui/config").status_code == 401  # the page's own API refuses a visitor
        assert client.post("/ui/login", data={"username": "me", "password": "wrong"}).status_code == 400
        assert client.get("/ui/config").status_code == 401
        assert client.post("/ui/login", data={"username": "me", "password": API_KEY}).status_code == 200
        assert client.get("/ui/config").status_code == 200
