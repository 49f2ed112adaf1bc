"""`python -m assistant.toyworld generate ...`: the toyworld command on its own."""

from __future__ import annotations

import argparse
import logging
import sys

from .cli import add_subcommand


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assistant.toyworld", description="Toy-world datasets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_subcommand(sub)
    # `python -m assistant.toyworld generate ...` and `... toyworld generate ...` both work
    args = parser.parse_args(["toyworld", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
