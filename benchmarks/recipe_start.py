"""The recipe's start, its data step and stage 0: one after the other (the recipe before session 52) against side by
side (`training.recipe.Stage0Job`: stage 0 in a process of its own at its one thread, the data step on the other
core), on the same recipe arguments, with the two stage 0s' weights and the two data steps' sets compared byte for
byte.

    python -m benchmarks.recipe_start           # make toy-model-one-run's data and stage 0: ~30 min on 2 cores
    python -m benchmarks.recipe_start --quick   # the recipe's --smoke sizes: about a minute

Prints both wall times and their ratio; writes benchmarks/results/recipe_start.json. Run it on an idle machine: the
side-by-side arm needs the second core.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import RESULTS, machine, parse_bench_args, run_cli, write_json

log = logging.getLogger("benchmarks.recipe_start")

# the data-shaping arguments of `make toy-model-one-run` (Makefile: ONE_RUN_FOCUS, its refresh task, TOY_TAIL)
ONE_RUN = (
    "--focus_task color_all:6,dense_detail:1,position_all:6,dense_detail:1,multiples_position:1:8000 "
    "--focus_check stage2b=color:0.75,stage2b3=position:0.75 --refresh_task instruct_many_compare3 "
    "--n_refresh 9600 --ship sft"
)


@dataclass
class RecipeStartArgs:
    recipe: str = field(
        default=ONE_RUN,
        metadata={
            "help": "Recipe arguments whose data step and stage 0 are timed (default: make toy-model-one-run's)."
        },
    )
    workdir: str | None = field(
        default=None, metadata={"help": "Where the two arms' workdirs go (default: a temp dir)."}
    )
    out: str = field(default=str(RESULTS / "recipe_start.json"), metadata={"help": "JSON results path."})


def digests(root: Path, pattern: str) -> dict[str, str]:
    """sha256 of every file under `root` matching `pattern`, by its path relative to `root`."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob(pattern))
        if p.is_file()
    }


def prepared(recipe_args: str, work: Path):
    """The recipe's arguments for `work`, sized as its run would size them, and stage 0's config."""
    from training import recipe

    args = recipe.parse_args([*shlex.split(recipe_args), "--workdir", str(work)])
    recipe.smoke_sizes(args)
    config = recipe.stage0_config(work, args.seed, args.smoke, args.stage_overrides().get("bootstrap"))
    return args, config


def one_after_the_other(recipe_args: str, work: Path) -> dict[str, float]:
    from training import bootstrap, recipe

    args, config = prepared(recipe_args, work)
    start = time.perf_counter()
    recipe.make_data(args, work)
    data = time.perf_counter() - start
    bootstrap.main(*config)
    total = time.perf_counter() - start
    return {"data": round(data, 1), "stage0": round(total - data, 1), "total": round(total, 1)}


def side_by_side(recipe_args: str, work: Path) -> dict[str, float]:
    from training import recipe

    args, config = prepared(recipe_args, work)
    start = time.perf_counter()
    with recipe.Stage0Job(config) as job:
        recipe.make_data(args, work, job.threads)
    data = time.perf_counter() - start
    job.wait()
    total = time.perf_counter() - start
    return {"data": round(data, 1), "stage0_after_data": round(total - data, 1), "total": round(total, 1)}


def main(args: RecipeStartArgs) -> dict:
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="recipe-start-"))
    first, second = base / "one_after_the_other", base / "side_by_side"
    facts = machine()  # the load before the arms start
    log.info("one after the other, in %s", first)
    before = one_after_the_other(args.recipe, first)
    log.info("side by side, in %s", second)
    after = side_by_side(args.recipe, second)
    same = {
        "stage0": digests(first / "stage0", "*.safetensors") == digests(second / "stage0", "*.safetensors"),
        "tokenizer": digests(first / "stage0" / "tokenizer", "*.json")
        == digests(second / "stage0" / "tokenizer", "*.json"),
        "data": digests(first / "data", "*.jsonl") == digests(second / "data", "*.jsonl"),
    }
    report = {
        "machine": facts,
        "args": asdict(args),
        "one_after_the_other_s": before,
        "side_by_side_s": after,
        "speedup": round(before["total"] / after["total"], 2),
        "identical": same,
    }
    write_json(args.out, report)
    print(
        json.dumps(
            {k: report[k] for k in ("one_after_the_other_s", "side_by_side_s", "speedup", "identical")}
        )
    )
    if not all(same.values()):
        raise RuntimeError(f"the two arms' outputs differ: {same} (workdirs under {base})")
    return report


def parse_args(argv: list[str] | None = None) -> RecipeStartArgs:
    return parse_bench_args(
        RecipeStartArgs,
        __doc__.splitlines()[0],
        dict(recipe="--smoke --focus_task color_all --refresh_task instruct_many_compare3"),
        argv,
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
