"""Serve the chat page from a FastAPI app, e.g. at /ui of the API server itself.

app = create_app(settings)
mount_ui(app, ChatClient(local_config(settings.host, settings.port, settings.api_keys)), path="/ui")
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence

from fastapi import FastAPI

from ui.client import ChatClient, ChatOptions, ClientConfig

log = logging.getLogger(__name__)

FOOTER_LINKS = ["gradio", "settings"]  # no "api": the page's own endpoints are not an API to build on
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def local_config(
    host: str, port: int, api_keys: Sequence[str] = (), model: str | None = None
) -> ClientConfig:
    """The client settings for a page served by the API server itself: its own address and first key."""
    host = WILDCARD_HOSTS.get(host, host)
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return ClientConfig(
        base_url=f"http://{host}:{port}/v1", api_key=api_keys[0] if api_keys else None, model=model
    )


def key_login(api_keys: Sequence[str]) -> Callable[[str, str], bool] | None:
    """A Gradio login check that takes any user name and one of the API keys as the password (None: no keys)."""
    if not api_keys:
        return None
    keys = [k.encode() for k in api_keys]
    return lambda _user, password: any(hmac.compare_digest(password.encode(), k) for k in keys)


def mount_ui(
    app: FastAPI,
    client: ChatClient,
    path: str = "/ui",
    defaults: ChatOptions | None = None,
    auth: Callable[[str, str], bool] | None = None,
) -> FastAPI:
    """Mount the chat page for `client` at `path` of `app` (settings start at `defaults`); it lives as long as `app`.

    With `auth`, the page asks for a login first (see `key_login`), so the server's key is never lent to anyone
    who merely reaches the page."""
    if not path.startswith("/") or (path != "/" and path.endswith("/")):
        raise ValueError(f"path must start with / and not end with one, got {path!r}; e.g. /ui")
    import gradio as gr

    from ui.app import build_ui

    demo = build_ui(client, defaults=defaults)
    log.info("chat page at %s, asking %s", path, client.config.base_url)
    return gr.mount_gradio_app(
        app, demo, path=path, footer_links=FOOTER_LINKS, ssr_mode=False, show_error=False, auth=auth
    )
