"""`assistant serve` and `python -m serving`: flags for every ServeSettings field, over ASSISTANT_* variables.

assistant serve --model models/tiny --port 8000 --api-key secret
ASSISTANT_ENGINE=upstream ASSISTANT_UPSTREAM_URL=http://vllm:8000/v1 python -m serving --host 0.0.0.0
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import MISSING, fields
from typing import Any

from serving.settings import ServeSettings

log = logging.getLogger(__name__)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field; unset flags stay None so the environment and defaults apply."""
    for f in fields(ServeSettings):
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not MISSING else None
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        kind = str(f.type)
        if kind.startswith("tuple"):
            parser.add_argument(flag, dest=f.name, action="append", default=None, help=help_text)
        else:
            cast: Any = int if kind.startswith("int") else float if kind.startswith("float") else str
            parser.add_argument(flag, dest=f.name, type=cast, default=None, help=help_text)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    overrides = {f.name: getattr(args, f.name, None) for f in fields(ServeSettings)}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return ServeSettings.from_env(**overrides)


def build_app(settings: ServeSettings):
    """The API with the chat page mounted at /ui: what `assistant serve` runs."""
    from serving.app import create_app
    from ui.client import ChatClient
    from ui.mount import key_login, local_config, mount_ui

    app = create_app(settings)
    client = ChatClient(local_config(settings.host, settings.port, settings.api_keys))
    mount_ui(app, client, auth=key_login(settings.api_keys))  # with keys, the page asks for one to log in
    return app


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = settings_from_args(args)
    if not settings.api_keys and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key; set --api-key or ASSISTANT_API_KEY", settings.host)
    app = build_app(settings)
    log.info("chat page at http://%s:%d/ui", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
    )
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="Serve the OpenAI-compatible API (transformers, vllm or upstream engine)."
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=cmd_serve)
