"""The toy recipe: toy-world data -> stage 0 -> 1 -> 2 -> 3 -> merge -> evals -> the embedded default model.

    make toy-model                               # = python -m training.recipe
    python -m training.recipe --workdir runs/toy --no-install

Each stage reads its YAML in configs/toy/ (paths rewritten under --workdir) and is skipped when its output is
already complete, so an interrupted recipe continues where it stopped. The metrics after each stage come from the
evals package, blind baseline included, and go into the model card (README.md in the model directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from trl import DPOConfig, ModelConfig, SFTConfig, TrlParser

from assistant.paths import DEFAULT_MODEL_DIR

log = logging.getLogger("training.recipe")
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "toy"


@dataclass
class RecipeArgs:
    workdir: str = field(default="runs/toy", metadata={"help": "Where data, stages and reports go."})
    seed: int = field(default=0, metadata={"help": "Seed of data, weights and batches."})
    n_caption: int = field(default=6000, metadata={"help": "Caption scenes (stage 1)."})
    n_instruct: int = field(default=20000, metadata={"help": "Instruction conversations (stage 2)."})
    n_preference: int = field(default=2000, metadata={"help": "Preference pairs (stage 3)."})
    n_eval: int = field(
        default=300, metadata={"help": "Eval scenes per benchmark (seeds in the eval range)."}
    )
    eval_limit: int = field(default=400, metadata={"help": "Questions per benchmark after each stage."})
    install: bool = field(
        default=True, metadata={"help": "Copy the final model into assistant/default_model."}
    )
    smoke: bool = field(
        default=False,
        metadata={"help": "A minutes-long run of every step with tiny sizes (tests the pipeline)."},
    )

    def __post_init__(self) -> None:
        for name in ("n_caption", "n_instruct", "n_preference", "n_eval", "eval_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# --smoke: every step runs, few steps each; the numbers mean nothing.
SMOKE_STAGE0 = dict(
    vision_steps=4, vision_batch=8, corpus_scenes=40, lm_steps=4, lm_batch=4, lm_eval_every=2, run_probe=False
)
SMOKE_STAGES = dict(max_steps=3, per_device_train_batch_size=4, save_steps=100)


def _done(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def make_data(args: RecipeArgs, work: Path) -> dict[str, Path]:
    from assistant.toyworld import make_dataset

    plan = {  # name: (task, n, first seed, eval split); training seed ranges never overlap
        "caption": ("caption", args.n_caption, args.seed + 10_000_000, False),
        "instruct": ("instruct", args.n_instruct, args.seed + 20_000_000, False),
        "preference": ("preference", args.n_preference, args.seed + 30_000_000, False),
        "eval_vqa": ("instruct", args.n_eval, args.seed, True),
        "eval_pope": ("pope", args.n_eval, args.seed + 100_000, True),
        "eval_chair": ("chair", args.n_eval, args.seed + 200_000, True),
    }
    out = {}
    for name, (task, n, seed, eval_split) in plan.items():
        path = work / "data" / name
        if not (path / "manifest.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            make_dataset(path, task=task, n=n, seed=seed, eval_split=eval_split)
        out[name] = path
    return out


def stage0_config(work: Path, seed: int, smoke: bool) -> tuple:
    from training.bootstrap import BootstrapArgs
    from training.stage0.config import LanguageArgs, ProbeArgs, VisionArgs

    overrides = dict(out=str(work / "stage0"), seed=seed, overwrite=True, **(SMOKE_STAGE0 if smoke else {}))
    return stage_config("bootstrap", work, (BootstrapArgs, VisionArgs, LanguageArgs, ProbeArgs), **overrides)


def stage_config(name: str, work: Path, parsers: tuple, **overrides) -> tuple:
    """Parse configs/toy/NAME.yaml with its runs/toy/ paths moved under `work`."""
    text = (CONFIGS / f"{name}.yaml").read_text().replace("runs/toy/", f"{work.as_posix()}/")
    config = yaml.safe_load(text)
    config.update(overrides)
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return TrlParser(parsers).parse_args_and_config(args=["--config", str(path)])


def evaluate(model_dir: Path, data: dict[str, Path], out: Path, limit: int, blind: bool) -> dict:
    """Skill VQA and POPE (and CHAIR for the final model), in-process, with the blind baseline when asked."""
    from evals.config import EvalArgs
    from evals.jobs import run_benchmark

    results = {}
    for bench, key in (("vqa", "eval_vqa"), ("pope", "eval_pope"), ("chair", "eval_chair")):
        if bench == "chair" and not blind:
            continue
        args = EvalArgs(
            data=str(data[key]), out=str(out / bench), model=str(model_dir), blind=blind, limit=limit
        )
        report, _ = run_benchmark(bench, args)
        results[bench] = {mode: sections for mode, sections in report.scores.items()}
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    return results


def run(args: RecipeArgs) -> Path:
    from training import bootstrap, dpo, merge, pretrain, sft

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    metrics: dict[str, dict] = {}

    def timed(name: str, fn, *a):
        start = time.perf_counter()
        result = fn(*a)
        timings[name] = round(time.perf_counter() - start, 1)
        log.info("%s: %.0f s", name, timings[name])
        return result

    if args.smoke:
        args.n_caption, args.n_instruct, args.n_preference, args.n_eval, args.eval_limit = 16, 16, 8, 6, 6
    data = timed("data", make_data, args, work)

    stage0 = work / "stage0"
    if not (stage0 / "stage0_report.json").is_file():
        timed("stage0", bootstrap.main, *stage0_config(work, args.seed, args.smoke))
    stage0_report = json.loads((stage0 / "stage0_report.json").read_text())

    small = SMOKE_STAGES if args.smoke else {}
    layer = {"vision_feature_layer": stage0_report["vision"]["vision_feature_layer"]}
    stages = [
        (
            "stage1",
            "pretrain",
            pretrain.main,
            (pretrain.PretrainScriptArgs, SFTConfig, ModelConfig),
            {**layer, **small},
        ),
        ("stage2", "sft", sft.main, (sft.SFTScriptArgs, SFTConfig, ModelConfig), small),
        ("stage3", "dpo", dpo.main, (dpo.DPOScriptArgs, DPOConfig, ModelConfig), small),
    ]
    for out_name, config_name, main, parsers, overrides in stages:
        out = work / out_name
        if not _done(out):
            timed(out_name, main, *stage_config(config_name, work, parsers, seed=args.seed, **overrides))
        if out_name != "stage3":
            metrics[out_name] = timed(
                f"eval_{out_name}", evaluate, out, data, work / "evals" / out_name, args.eval_limit, False
            )

    final = work / "final"
    if not _done(final):
        timed(
            "merge",
            merge.main,
            merge.MergeArgs(adapter=str(work / "stage3"), out=str(final), dtype="float16"),
        )
    metrics["final"] = timed(
        "eval_final", evaluate, final, data, work / "evals" / "final", args.eval_limit, True
    )

    from training.model_card import write_model_card

    write_model_card(final, args=asdict(args), data=data, metrics=metrics, timings=timings, stage0=stage0)
    if args.install:
        shutil.rmtree(DEFAULT_MODEL_DIR, ignore_errors=True)
        shutil.copytree(
            final, DEFAULT_MODEL_DIR, ignore=shutil.ignore_patterns("checkpoint-*", "runs", "*.bin")
        )
        log.info("installed the embedded default model into %s", DEFAULT_MODEL_DIR)
    return final


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Build the embedded default model with the toy recipe.")
    for f in RecipeArgs.__dataclass_fields__.values():
        if f.type == "bool" or isinstance(f.default, bool):
            parser.add_argument(
                f"--{f.name}",
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=f.metadata["help"],
            )
        else:
            parser.add_argument(
                f"--{f.name}", type=type(f.default), default=f.default, help=f.metadata["help"]
            )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(RecipeArgs(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
