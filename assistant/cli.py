"""The `assistant` console script. Each subcommand is a plain function; user errors print one line, no traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from assistant.errors import AssistantError, ModelLoadError
from assistant.paths import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME, resolve_model_source

log = logging.getLogger("assistant")


def resolve_model(model: str | None) -> str:
    """The model to use: the one named, else (or `default`) the embedded model, with a clear error if it is missing."""
    if model and model != DEFAULT_MODEL_NAME:
        return resolve_model_source(model)
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise ModelLoadError(
            f"the embedded default model is missing from {DEFAULT_MODEL_DIR}; build it with `make toy-model` "
            "or pass --model DIR_OR_HUB_ID"
        )
    return str(DEFAULT_MODEL_DIR)


def cmd_chat(args: argparse.Namespace) -> int:
    from assistant.inference import Assistant

    assistant = Assistant.load(resolve_model(args.model), device=args.device)
    content = [{"type": "image"} for _ in args.image] + [{"type": "text", "text": args.question}]
    messages = [{"role": "user", "content": content}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    sampling = dict(max_new_tokens=args.max_tokens, temperature=args.temperature)
    for delta in assistant.stream(messages, images=args.image, **sampling):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from assistant.modeling import ModelSpec, build_model, save_model

    spec = ModelSpec(
        vision=args.vision,
        language=args.language,
        tokenizer=args.tokenizer,
        connector=args.connector,
        max_tiles=None if args.fixed_resolution else args.max_tiles,
        num_query_tokens=args.num_query_tokens,
        qformer_layers=args.qformer_layers,
        qformer_image_size=args.qformer_image_size,
        dtype=args.dtype,
    )
    model, processor = build_model(spec)
    out = save_model(model, processor, args.out)
    log.info("wrote %s", out)
    return 0


def add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="Ask a question about images on the command line.")
    p.add_argument("question", help="The question to ask.")
    p.add_argument("--model", help="Model directory or hub id (default: the embedded model).")
    p.add_argument("--image", action="append", default=[], help="Image file; repeat for several.")
    p.add_argument("--system", help="Optional system prompt.")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto.")
    p.set_defaults(func=cmd_chat)


def add_build(sub: argparse._SubParsersAction) -> None:
    from assistant.modeling import CONNECTORS

    p = sub.add_parser(
        "build",
        help="Assemble a vision tower and a causal LM into a LLaVA(-NeXT) or, with --connector qformer, a BLIP-2 "
        "model directory.",
    )
    p.add_argument(
        "--vision", required=True, help="CLIP/SigLIP (or BLIP-2 vision) hub id or local directory."
    )
    p.add_argument("--language", required=True, help="Causal LM hub id or local directory.")
    p.add_argument("--tokenizer", help="Tokenizer (default: the language model's).")
    p.add_argument("--connector", default="mlp2x_gelu", choices=sorted(CONNECTORS))
    p.add_argument("--max-tiles", type=int, default=4, help="AnyRes tiles per image (plus a thumbnail).")
    p.add_argument("--fixed-resolution", action="store_true", help="Build a plain LLaVA model (no AnyRes).")
    p.add_argument("--num-query-tokens", type=int, default=32, help="qformer: query tokens per image.")
    p.add_argument("--qformer-layers", type=int, default=2, help="qformer: transformer layers.")
    p.add_argument(
        "--qformer-image-size",
        type=int,
        default=None,
        help="qformer: image side the tower reads (default: its own).",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", required=True, help="Output directory.")
    p.set_defaults(func=cmd_build)


def _optional_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands that live in other packages; each module exposes add_subcommand(subparsers)."""
    import importlib

    adders = []
    for module in ("assistant.toyworld.cli", "serving.cli", "ui.cli", "evals.cli", "training.cli"):
        try:
            adders.append(importlib.import_module(module).add_subcommand)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a missing dependency inside an existing module is a real error
                raise
    return adders


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant", description="Train, serve and evaluate a LLaVA-style assistant."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in [add_chat, add_build, *_optional_commands()]:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except AssistantError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
