"""`assistant ui`: the chat page on its own, in front of any OpenAI-compatible server.

assistant ui --api-base http://127.0.0.1:8000/v1 --api-key secret --port 7860
"""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger(__name__)


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn
    from fastapi import FastAPI

    from assistant.errors import ConfigError
    from ui.client import ChatClient, ClientConfig
    from ui.mount import mount_ui

    try:
        config = ClientConfig(base_url=args.api_base, api_key=args.api_key, model=args.model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    app = mount_ui(FastAPI(title="llava-assistant chat"), ChatClient(config), path="/")
    log.info("chat page at http://%s:%d/ in front of %s", args.host, args.port, config.base_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui", help="Serve the Gradio chat page in front of any OpenAI-compatible API (it loads no model)."
    )
    parser.add_argument(
        "--api-base",
        default=os.environ.get("ASSISTANT_UI_API_BASE", "http://127.0.0.1:8000/v1"),
        help="Base URL of the OpenAI-compatible API (env ASSISTANT_UI_API_BASE; default: %(default)s).",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("ASSISTANT_UI_API_KEY"),
        help="Bearer key for the API (env ASSISTANT_UI_API_KEY; default: none).",
    )
    parser.add_argument("--model", help="Model id to ask (default: the first one the API lists).")
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address the page listens on (default: %(default)s)."
    )
    parser.add_argument(
        "--port", type=int, default=7860, help="Port the page listens on (default: %(default)s)."
    )
    parser.set_defaults(func=cmd_ui)
