"""`assistant toyworld generate`: write a toy-world dataset.

assistant toyworld generate --task instruct --n 1000 --seed 0 --out data/instruct
python -m assistant.toyworld generate --task pope --n 200 --seed 0 --eval --out data/pope_eval
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from .dataset import EVAL_SEED_BASE, make_dataset
from .scene import PRESETS, Scene
from .tasks import TASKS


def run_generate(args: argparse.Namespace) -> Path:
    """Make the dataset `args` describe; a user error exits with one line, never a traceback."""
    from tqdm import tqdm

    from assistant.threads import choose_workers

    def progress(scenes: Iterable[Scene]) -> Iterable[Scene]:
        return tqdm(scenes, desc=f"toyworld {args.task}", unit="img", disable=args.quiet)

    try:
        workers = choose_workers(args.workers)
        return make_dataset(
            Path(args.out),
            task=args.task,
            n=args.n,
            seed=args.seed,
            preset=args.preset,
            eval_split=args.eval,
            overwrite=args.overwrite,
            progress=progress,
            workers=workers.threads,
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _cmd_generate(args: argparse.Namespace) -> int:
    run_generate(args)
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Add `toyworld generate` to a parser's subcommands."""
    p = subparsers.add_parser(
        "toyworld", help="Procedural scenes with ground truth, and datasets made from them."
    )
    sub = p.add_subparsers(dest="toyworld_command", required=True, metavar="COMMAND")
    g = sub.add_parser("generate", help="Write a dataset (images + JSON) for one task.")
    g.add_argument("--task", required=True, choices=sorted(TASKS), help="What to make.")
    g.add_argument("--n", type=int, required=True, help="Number of scenes (images).")
    g.add_argument("--seed", type=int, default=0, help="First scene seed; scenes use seed .. seed+n-1.")
    g.add_argument("--out", required=True, help="Output directory (must be new or empty).")
    g.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="Scene preset.")
    g.add_argument(
        "--eval",
        action="store_true",
        help=f"Evaluation set: seeds are offset by {EVAL_SEED_BASE}, a range training sets never use.",
    )
    g.add_argument("--overwrite", action="store_true", help="Replace a previous toy-world dataset in --out.")
    g.add_argument("--quiet", action="store_true", help="No progress bar.")
    g.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Processes rendering the images (0: the CPUs idle when it starts); the same bytes whatever the number.",
    )
    g.set_defaults(func=_cmd_generate)
