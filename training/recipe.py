"""The toy recipe: toy-world data -> stage 0 -> 1 -> 2 -> 3 -> merge -> evals -> the embedded default model.

    make toy-model                               # = python -m training.recipe
    python -m training.recipe --workdir runs/toy --no-install

Each stage reads its YAML in configs/toy/ (paths rewritten under --workdir) and is skipped when its output is
already complete, so an interrupted recipe continues where it stopped. The metrics after each stage come from the
evals package, blind baseline included, and go into the model card (README.md in the model directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from trl import DPOConfig, ModelConfig, SFTConfig, TrlParser

from assistant.errors import ConfigError
from assistant.modeling import CONNECTORS
from assistant.paths import DEFAULT_MODEL_DIR

log = logging.getLogger("training.recipe")
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "toy"
FOCUS_SEED_GAP = 2_000_000  # scenes between two focus stages' first seeds: the most one stage can have


class FocusStage(NamedTuple):
    """One item of --focus_task: its toy-world task, epochs (None: sft_focus.yaml's) and scenes (None: --n_focus)."""

    task: str
    epochs: int | None = None
    scenes: int | None = None


@dataclass
class RecipeArgs:
    workdir: str = field(default="runs/toy", metadata={"help": "Where data, stages and reports go."})
    seed: int = field(default=0, metadata={"help": "Seed of data, weights and batches."})
    n_caption: int = field(default=6000, metadata={"help": "Caption scenes (stage 1)."})
    n_instruct: int = field(default=20000, metadata={"help": "Instruction conversations (stage 2)."})
    instruct_task: str = field(
        default="instruct",
        metadata={
            "help": "Toy-world task of the stage-2 data: instruct (the shipped model's), sft_mix (an ablation "
            "that lost shape), instruct_dense (6-12 turns per image: position and text presence up, colour "
            "and counting down) or instruct_train (text presence up; counting down after DPO; docs/recipe.md)."
        },
    )
    connector: str = field(
        default="mlp2x_gelu",
        metadata={
            "help": "mlp2x_gelu (LLaVA-NeXT, the shipped model's) or qformer (BLIP-2: configs/toy/*_qformer.yaml, "
            "a distilled BLIP-2 tower from stage 0; docs/connectors.md)."
        },
    )
    n_preference: int = field(default=2000, metadata={"help": "Preference pairs (stage 3)."})
    n_eval: int = field(
        default=300, metadata={"help": "Eval scenes per benchmark (seeds in the eval range)."}
    )
    eval_limit: int = field(default=600, metadata={"help": "Questions per benchmark after each stage."})
    probe_n: int = field(
        default=300, metadata={"help": "One-object scenes for the probe after each stage (0: no probe)."}
    )
    ocr_hint_share: float = field(
        default=0.5,
        metadata={
            "help": "Share of stage-2 conversations with text that get the service's OCR hint (real OCR)."
        },
    )
    grpo: bool = field(
        default=False,
        metadata={
            "help": "Also run stage 3b: GRPO from stage 2 with rewards from the scenes' ground truth "
            "(configs/toy/grpo.yaml), merged into final_grpo and evaluated beside final (DPO)."
        },
    )
    n_rl: int = field(default=1000, metadata={"help": "RL prompts for stage 3b (with --grpo)."})
    rl_task: str = field(
        default="rl_detail",
        metadata={
            "help": "Toy-world task of the RL prompts: rl_detail (descriptions), rl_detail_varied (the same asked "
            "in 12 phrasings), rl_detail_count (one in five a counting question), rl_detail_mix (two in five a "
            "short question of any skill) or rl (half short questions)."
        },
    )
    focus_task: str = field(
        default="",
        metadata={
            "help": "Toy-world task of a focus phase after stage 2 (e.g. color: 'What colour is the star?'): stage "
            "2b trains on it alone (sft_focus.yaml: 5 epochs), stage 2c then a few hundred steps of stage 2's data "
            "(sft_refresh.yaml), and DPO and GRPO start from stage 2c. Several, as TASK:EPOCHS,TASK:EPOCHS (e.g. "
            "color_all:4,keyed_detail:1): stages 2b, 2b2, ... one after another, each on its own data (data/focus, "
            "data/focus2, ...: scenes from seed +60,000,000, +62,000,000, ...). TASK:EPOCHS:SCENES gives that stage "
            "its own number of scenes in place of --n_focus (e.g. color_by_size:2:30000: a task that asks of a "
            "third of the scenes). Empty: off (docs/recipe.md, sessions 13-15)."
        },
    )
    focus_check: str = field(
        default="",
        metadata={
            "help": "Run a focus stage until a held-out check says its skill has formed: STAGE=TASK:STOP_AT, "
            "comma-separated (e.g. stage2b=color:0.75). The stage answers the first 250 questions of data/check_TASK "
            "(toy-world TASK on eval-split scenes from seed +500,000) every 200 steps (--set STAGE.skill_check_every=N) "
            "and stops once they score STOP_AT; its epochs are then the most it runs (training/skill_check.py, "
            "docs/recipe.md, session 36)."
        },
    )
    n_focus: int = field(
        default=10000,
        metadata={"help": "Scenes of the focus task (one conversation each; color: one question)."},
    )
    refresh_task: str = field(
        default="",
        metadata={
            "help": "Toy-world task of stage 2c's data with --focus_task (n_refresh scenes from seed +70,000,000, "
            "OCR hints as stage 2's). Empty: stage 2's own data."
        },
    )
    n_refresh: int = field(
        default=6400, metadata={"help": "Scenes of the refresh task (with --refresh_task)."}
    )
    continue_from: str = field(
        default="",
        metadata={
            "help": "A model an earlier recipe run made (e.g. runs/toy/final_grpo): stages 0-2 are skipped and the "
            "focus phase starts from that model, its stages numbered on from that run's focus data in the model's "
            "parent (a run with data/focus .. data/focus4 is continued by 2b5 on data/focus5, seed +68,000,000). "
            "The model card adds that run's time and stage-0 report where its workdir has them. Needs --focus_task "
            "(docs/recipe.md, session 20)."
        },
    )
    skip_stage2: bool = field(
        default=False,
        metadata={
            "help": "Start the focus phase from stage 1: no stage 2 and no stage-2 data (2c's, --refresh_task, "
            "takes its place at the end). Needs --focus_task and --refresh_task. Session 51: `color_all`'s lookup "
            "formed at step 1,400 from stage 1 against 1,600 from stage 2 on the same lineage, and the one run's "
            "model lost shape by colour (0.29 through the API): not adopted (docs/recipe.md). The build's stage-2 "
            "units are then not known from the run itself."
        },
    )
    processes: int = field(
        default=1,
        metadata={
            "help": "CPU processes each supervised stage (1, 2 and the focus phase) trains in: above 1, `accelerate "
            "launch` runs it data-parallel over gloo, each process at its share of the stage's threads and batch (the "
            "batch a step sees is unchanged; it must split evenly). On a 2-core machine two processes of one thread "
            "took 1.03-1.17x less time a step than one of two threads (stage 2 whole: 1.03x; "
            "benchmarks/recipe_processes.py), and the weights differ from one process's as another lineage's do "
            "(docs/recipe.md, session 53)."
        },
    )
    ship: str = field(
        default="dpo",
        metadata={
            "help": "Which final model is installed and carries the card: dpo, grpo, or sft (the last supervised "
            "stage, 2c after a focus phase, saved in float16 as final_sft, with no DPO or GRPO run; session 21: "
            "after 2c on instruct_many_pos neither DPO nor GRPO beat it through the API)."
        },
    )
    install: bool | None = field(
        default=None,
        metadata={
            "help": "Copy the final model into assistant/default_model (default: yes for the MLP connector, no for "
            "qformer, which is not shipped unless it beats the MLP)."
        },
    )
    smoke: bool = field(
        default=False,
        metadata={"help": "A minutes-long run of every step with tiny sizes (tests the pipeline)."},
    )
    set: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Override a stage's YAML, CONFIG.KEY=VALUE (VALUE is YAML), e.g. pretrain.train_parts=[connector] "
            "or sft.learning_rate=1e-3; repeatable. CONFIG is a file name in configs/toy/ (ablations: docs/recipe.md), "
            "or one focus stage by name (stage2b, stage2b2, ...: e.g. stage2b3.vision_lr_scale=0.1, over sft_focus's)."
        },
    )

    def __post_init__(self) -> None:
        for name in (
            "n_caption",
            "n_instruct",
            "n_preference",
            "n_eval",
            "eval_limit",
            "n_rl",
            "n_focus",
            "n_refresh",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_n and self.probe_n < 4:
            raise ValueError(f"probe_n must be 0 (no probe) or >= 4, got {self.probe_n}")
        if self.ship not in ("sft", "dpo", "grpo") or (self.ship == "grpo" and not self.grpo):
            raise ValueError(f"ship must be sft, dpo, or grpo together with --grpo; got {self.ship!r}")
        if self.grpo and not self.runs_dpo:
            raise ValueError(
                "--ship sft skips DPO and GRPO (stages 3 and 3b); drop --grpo, or ship dpo or grpo"
            )
        if not 0.0 <= self.ocr_hint_share <= 1.0:
            raise ValueError(f"ocr_hint_share must be between 0 and 1, got {self.ocr_hint_share}")
        from assistant.toyworld import TASKS

        for name, task in [("refresh_task", self.refresh_task)] + [
            ("focus_task", stage.task) for stage in self.focus_stages()
        ]:
            if task and (task not in TASKS or TASKS[task].format != "conversation"):
                tasks = sorted(n for n, t in TASKS.items() if t.format == "conversation")
                raise ValueError(
                    f"{name} must be a toy-world conversation task, one of {tasks}; got {task!r}"
                )
        if self.continue_from:
            if not self.focus_task:
                raise ValueError("continue_from starts the focus phase from a model; add --focus_task")
            if not (Path(self.continue_from) / "config.json").is_file():
                raise ValueError(f"continue_from {self.continue_from}: no model there (no config.json)")
        if self.skip_stage2 and not (self.focus_task and self.refresh_task):
            raise ValueError(
                "skip_stage2 starts the focus phase from stage 1 and ends it with 2c on --refresh_task; add "
                "--focus_task and --refresh_task"
            )
        if self.skip_stage2 and self.continue_from:
            raise ValueError("continue_from has no stages 1 and 2 to skip; drop --skip_stage2")
        if self.refresh_task and not self.focus_task:
            raise ValueError("refresh_task sets stage 2c's data, which runs only with --focus_task; add one")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if self.connector not in CONNECTORS:
            raise ValueError(f"unknown connector {self.connector!r}; choose from {sorted(CONNECTORS)}")
        if self.install is None:
            self.install = self.connector == "mlp2x_gelu"
        self.stage_overrides()  # a malformed --set fails before any work
        self.focus_checks()

    @property
    def runs_dpo(self) -> bool:
        """Whether stage 3 (DPO) runs: not with --ship sft, which ships the last supervised stage."""
        return self.ship != "sft"

    def first_focus(self) -> int:
        """The index of this run's first focus stage: 0, or with --continue_from one past the earlier run's last
        focus data (its data/focus, data/focus2, ...; a run that itself continued has only its later ones)."""
        if not self.continue_from:
            return 0
        earlier = Path(self.continue_from).parent
        made = [
            i
            for i in range(MAX_FOCUS)
            if (earlier / "data" / focus_name("focus", i) / "manifest.json").is_file()
        ]
        return max(made, default=-1) + 1

    def focus_stages(self) -> list[FocusStage]:
        """`--focus_task` as FocusStage(task, epochs, scenes), in training order."""
        stages = []
        for item in filter(None, (part.strip() for part in self.focus_task.split(","))):
            task, *numbers = item.split(":")
            if len(numbers) > 2 or not all(n.isdigit() and int(n) > 0 for n in numbers):
                raise ValueError(
                    f"focus_task {item!r}: write TASK, TASK:EPOCHS or TASK:EPOCHS:SCENES with EPOCHS, SCENES >= 1"
                )
            if len(numbers) == 2 and int(numbers[1]) > FOCUS_SEED_GAP:
                raise ValueError(
                    f"focus_task {item!r}: a focus stage has at most {FOCUS_SEED_GAP:,} scenes (its seeds end "
                    "where the next stage's begin)"
                )
            stages.append(FocusStage(task, *map(int, numbers)))
        return stages

    def focus_checks(self) -> dict[str, tuple[str, float]]:
        """`--focus_check` as {focus stage name: (check task, stop_at)}."""
        from assistant.toyworld import TASKS

        checks: dict[str, tuple[str, float]] = {}
        names = self.focus_stage_names()
        for item in filter(None, (part.strip() for part in self.focus_check.split(","))):
            stage, _, rest = item.partition("=")
            task, _, stop_at = rest.partition(":")
            try:
                stop = float(stop_at)
            except ValueError:
                stop = -1.0
            if not (task and 0.0 < stop <= 1.0):
                raise ValueError(f"focus_check {item!r}: write STAGE=TASK:STOP_AT with 0 < STOP_AT <= 1")
            if stage not in names:
                raise ValueError(
                    f"focus_check {item!r}: {stage!r} is not a focus stage of this run ({', '.join(names) or 'none'})"
                )
            if task not in TASKS or TASKS[task].format != "conversation":
                raise ValueError(f"focus_check {item!r}: {task!r} is not a toy-world question task")
            checks[stage] = (task, stop)
        return checks

    def focus_stage_names(self) -> list[str]:
        """This run's focus stages by name: stage2b, stage2b2, ... (numbered on with --continue_from)."""
        first = self.first_focus() if self.focus_task else 0
        return [focus_name("stage2b", i) for i in range(first, first + len(self.focus_stages()))]

    def stage_overrides(self) -> dict[str, dict]:
        """`--set` as {config name or focus stage name: {key: value}}. A focus stage's own (e.g.
        stage2b3.vision_lr_scale=0.1) applies to that stage alone, over `sft_focus.*`."""
        out: dict[str, dict] = {}
        focus_stages = self.focus_stage_names()
        for item in self.set:
            target, sep, value = item.partition("=")
            name, dot, key = target.partition(".")
            if not (sep and dot and name and key):
                raise ValueError(f"--set {item!r}: write CONFIG.KEY=VALUE, e.g. sft.learning_rate=1e-3")
            if not (CONFIGS / f"{name}.yaml").is_file() and name not in focus_stages:
                known = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
                stages = ", ".join(focus_stages) or "none without --focus_task"
                raise ValueError(
                    f"--set {item!r}: no configs/toy/{name}.yaml nor a focus stage of this run; choose from "
                    f"{known} or a focus stage ({stages})"
                )
            out.setdefault(name, {})[key] = _yaml_value(value)
        return out


# --smoke: every step runs, few steps each; the numbers mean nothing.
SMOKE_STAGE0 = dict(
    vision_steps=4, vision_batch=8, corpus_scenes=40, lm_steps=4, lm_batch=4, lm_eval_every=2, run_probe=False
)
SMOKE_STAGES = dict(max_steps=3, per_device_train_batch_size=4, save_steps=100)
SMOKE_GRPO = dict(num_generations=2, max_completion_length=16)  # 2 prompts x 2 answers per step


def _yaml_value(text: str):
    """A YAML scalar or list; numbers YAML 1.1 leaves as strings ("1e-3") become floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class Reused(dict):
    """What a step returns when it found its work done before (its data or evals): the recipe keeps the time the
    step took when it did the work (work/timings.json) instead of the seconds it took to find it."""


def _done(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def export(stage: Path, out: Path) -> Path:
    """A full (not LoRA) stage saved in float16 with its processor, as merge.py saves the merged models."""
    from transformers import AutoModelForImageTextToText

    from assistant.modeling import save_model
    from assistant.processing import load_processor

    model = AutoModelForImageTextToText.from_pretrained(stage, dtype=torch.float16)
    return save_model(model, load_processor(stage), out)


def build_seconds(work: Path) -> float:
    """The seconds a run's model took to build, the runs it continued included: its build_seconds.json, else (a run
    made before session 22) the sum of its timings.json."""
    total = work / "build_seconds.json"
    if total.is_file():
        return json.loads(total.read_text())["seconds"]
    timings = work / "timings.json"
    return round(sum(json.loads(timings.read_text()).values()), 1) if timings.is_file() else 0.0


def stage2_seconds(work: Path) -> float | None:
    """The seconds stage 2 took in a run or the run it continued (None where no timings say). Stage 2 is the same
    work in every run (the same data, steps and settings), so a build's seconds over it, its stage-2 units, compare
    builds across machines that differ 2x in speed (docs/recipe.md, session 43)."""
    for name, key in (("build_seconds.json", "stage2_seconds"), ("timings.json", "stage2")):
        path = work / name
        seconds = json.loads(path.read_text()).get(key) if path.is_file() else None
        if seconds:
            return seconds
    return None


def build_time(seconds: float, stage2: float | None) -> dict[str, float]:
    """build_seconds.json: the build's seconds, and where stage 2's time is known, it and the build in its units."""
    if not stage2:
        return {"seconds": seconds}
    return {"seconds": seconds, "stage2_seconds": stage2, "stage2_units": round(seconds / stage2, 2)}


def make_data(args: RecipeArgs, work: Path, cpus_taken: int = 0) -> dict[str, Path]:
    """The run's data sets under work/data (each reused where already made with the same task, seeds and hints).
    `cpus_taken`: CPUs another job of the run holds meanwhile (stage 0 beside it), left out of the rendering
    processes."""
    from assistant.toyworld import make_dataset

    plan = {  # name: (task, n, first seed, eval split); training seed ranges never overlap
        "caption": ("caption", args.n_caption, args.seed + 10_000_000, False),
        "instruct": (args.instruct_task, args.n_instruct, args.seed + 20_000_000, False),
        "preference": ("preference", args.n_preference, args.seed + 30_000_000, False),
        "eval_vqa": ("instruct", args.n_eval, args.seed, True),
        "eval_pope": ("pope", args.n_eval, args.seed + 100_000, True),
        "eval_chair": ("chair", args.n_eval, args.seed + 200_000, True),
        "eval_ocr": ("ocr", args.n_eval, args.seed + 300_000, True),
    }
    if not args.runs_dpo:
        del plan["preference"]
    if args.grpo:
        plan["rl"] = (args.rl_task, args.n_rl, args.seed + 40_000_000, False)
    # a continued run has no stages 1 and 2, and --skip_stage2 no stage 2 (stage 2's data is then GRPO's anchor only
    # without a refresh)
    if args.continue_from:
        del plan["caption"]
    if (args.continue_from or args.skip_stage2) and args.refresh_task:
        del plan["instruct"]
    for i, stage in enumerate(args.focus_stages(), start=args.first_focus()):
        scenes = args.n_focus if args.smoke or stage.scenes is None else stage.scenes
        plan[focus_name("focus", i)] = (stage.task, scenes, focus_seed(args.seed, i), False)
    if args.refresh_task:
        plan["refresh"] = (args.refresh_task, args.n_refresh, args.seed + 70_000_000, False)
    for task, _ in args.focus_checks().values():
        scenes = args.n_eval if args.smoke else CHECK_SCENES
        plan[f"check_{task}"] = (task, scenes, check_seed(args.seed, task), True)
    earlier = Path(args.continue_from).parent / "data" if args.continue_from else None
    workers = None  # processes rendering the images, chosen by the idle CPUs when the first set is made
    out, built = {}, False
    for name, (task, n, seed, eval_split) in plan.items():
        path = work / "data" / name
        want = {"task": task, "n": n, "seed": seed, "eval": eval_split}
        planned_set(path, want)
        if not (path / "manifest.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            hints = (args.ocr_hint_share, args.seed) if name in HINTED and args.ocr_hint_share > 0 else None
            same = earlier and built_before(earlier, want, hints)
            if same:  # the run continued from built this very set (its eval sets, a refresh task run again)
                shutil.copytree(same, path)
                manifest = json.loads((path / "manifest.json").read_text())
                (path / "manifest.json").write_text(
                    json.dumps({**manifest, "copied_from": str(same)}, indent=1)
                )
                log.info("data %s: the same set as %s, copied", name, same)
            else:
                if workers is None:
                    from assistant.threads import choose_workers, cpu_quota, usable_cpus

                    workers = choose_workers(cpus=max(1, usable_cpus(quota=cpu_quota()) - cpus_taken))
                    log.info("data: processes rendering images: %s", workers)
                make_dataset(path, task=task, n=n, seed=seed, eval_split=eval_split, workers=workers.threads)
            built = True
        out[name] = path
    if args.ocr_hint_share > 0:
        from training.ocr_hints import add_ocr_hints

        for name in HINTED:
            if name in out:
                hinted = "ocr_hints" in json.loads((out[name] / "manifest.json").read_text())
                add_ocr_hints(out[name], args.ocr_hint_share, seed=args.seed)
                built = built or not hinted
    if args.grpo:
        built = built or not (work / "data" / "anchor" / "manifest.json").is_file()
        # the anchor holds the short answers where the last supervised stage left them: 2c's data with a focus phase
        # (a continued run has no stage-2 data)
        source = out["refresh"] if "refresh" in out else out["instruct"]
        out["anchor"] = write_anchor(source, work / "data" / "anchor")
    return out if built else Reused(out)


HINTED = ("instruct", "refresh")  # the sets that carry OCR hints (--ocr_hint_share)


def manifest_differs(manifest: dict[str, Any], want: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`want`'s keys whose value the set's `manifest` does not have: {key: (the manifest's, wanted)}."""
    return {k: (manifest.get(k), v) for k, v in want.items() if manifest.get(k) != v}


def planned_set(path: Path, want: dict[str, Any]) -> None:
    """Stop where the set already at `path` (a resumed or reused workdir) is not the one this run plans (`want`'s
    task, n, seed and split): the recipe reuses a set that has its manifest, and until session 48 it reused one made
    under other options (another --refresh_task, a linked data/ dir) without a word."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        return
    differ = manifest_differs(json.loads(manifest_path.read_text()), want)
    if differ:
        said = ", ".join(f"{k} {have!r} where this run plans {v!r}" for k, (have, v) in differ.items())
        raise ValueError(
            f"data set {path} was made under other options ({said}); remove that directory to build it anew, "
            "or give a fresh --workdir"
        )


def built_before(data: Path, want: dict[str, Any], hints: tuple[float, int] | None) -> Path | None:
    """A set under `data` (an earlier run's data/) whose manifest has `want`'s task, n, seed and split, made by
    this generator, with the OCR hints this run would add (`hints`: share and seed) or none yet; else None."""
    from assistant.toyworld.writers import GENERATOR_VERSION

    for manifest_path in sorted(data.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("generator_version") != GENERATOR_VERSION or manifest.get("preset") != "tiny":
            continue
        if manifest_differs(manifest, want):
            continue
        given = manifest.get("ocr_hints")
        if given is None or (hints is not None and (given["share"], given["seed"]) == hints):
            return manifest_path.parent
    return None


MAX_FOCUS = 20
CHECK_SCENES = 300  # a focus stage's held-out check: 250 questions of most tasks


def check_seed(seed: int, task: str) -> int:
    """The first scene seed of `task`'s check set: eval-split scenes from seed + 500,000, 10,000 apart by a slot the
    task's name alone sets (crc32 mod 100,000), so a task added to the registry moves no other task's check (the
    benchmarks' sets start at seed + 0 .. + 300,000). Until session 45 the slot was the task's place in the registry,
    which session 44's new tasks shifted (D8's check_color was at +940,000)."""
    import zlib

    return seed + 500_000 + zlib.crc32(task.encode()) % 100_000 * 10_000


def focus_seed(seed: int, i: int) -> int:
    """The i-th focus stage's first scene seed: five stages 2,000,000 apart from seed + 60M, then on from seed + 80M
    (seed + 70M is stage 2c's data)."""
    if not 0 <= i < MAX_FOCUS:
        raise ValueError(f"focus stage {i + 1}: the recipe makes at most {MAX_FOCUS} focus stages")
    return seed + (60_000_000 + i * FOCUS_SEED_GAP if i < 5 else 80_000_000 + (i - 5) * FOCUS_SEED_GAP)


def focus_name(base: str, i: int) -> str:
    """The i-th focus stage's name: focus, focus2, ... (data) or stage2b, stage2b2, ... (model)."""
    return base if i == 0 else f"{base}{i + 1}"


def write_anchor(instruct: Path, out: Path, drop: tuple[str, ...] = ("detail", "caption")) -> Path:
    """GRPO's anchor set: the last supervised stage's conversations (OCR hints included) whose image is never
    described: stage 2's `instruct`, or stage 2c's `refresh` after a focus phase.

    Anchoring on all of stage 2 held the descriptions where stage 2 left them (a seventh of its conversations hold
    a ground-truth description) and GRPO cut no hallucinations; without them it holds the short answers while the
    descriptions move (arms Dg11-Dg15, docs/recipe.md). After a focus phase, stage 2's data pulled the POPE
    yes-ratio back up to stage 2's (arm QCVA1, session 17). The images stay in `instruct` (a link). Written once
    per source: a set made from another source is replaced."""
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("source") == str(instruct):
        return out
    described = set()
    with open(instruct / "qa.jsonl") as f:
        for line in f:
            qa = json.loads(line)
            if qa["task"] in drop:
                described.add(qa["image"])
    if out.is_symlink():  # a set linked from another workdir is replaced, not followed
        out.unlink()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    kept = total = 0
    with open(instruct / "messages.jsonl") as src, open(out / "messages.jsonl", "w") as dst:
        for line in src:
            total += 1
            if not described.intersection(json.loads(line)["images"]):
                dst.write(line)
                kept += 1
    (out / "images").symlink_to(os.path.relpath(instruct / "images", out))
    manifest = {
        "task": "anchor",
        "source": str(instruct),
        "dropped_tasks": list(drop),
        "n": kept,
        "records": kept,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log.info("anchor: %d of %d conversations of %s (none describes its image)", kept, total, instruct)
    return out


def stage0_config(work: Path, seed: int, smoke: bool, extra: dict | None = None) -> tuple:
    from training.bootstrap import BootstrapArgs
    from training.stage0.config import LanguageArgs, ProbeArgs, VisionArgs

    overrides = dict(out=str(work / "stage0"), seed=seed, overwrite=True, **(SMOKE_STAGE0 if smoke else {}))
    overrides.update(extra or {})
    return stage_config("bootstrap", work, (BootstrapArgs, VisionArgs, LanguageArgs, ProbeArgs), **overrides)


def stage_yaml(name: str, work: Path, **overrides) -> dict:
    """configs/toy/NAME.yaml with its runs/toy/ paths moved under `work`, and `overrides`."""
    text = (CONFIGS / f"{name}.yaml").read_text()
    text = text.replace("runs/toy_qformer/", f"{work.as_posix()}/").replace(
        "runs/toy/", f"{work.as_posix()}/"
    )
    return {**yaml.safe_load(text), **overrides}


def stage_config(name: str, work: Path, parsers: tuple, saved_as: str = "", **overrides) -> tuple:
    """Parse configs/toy/NAME.yaml with its runs/toy/ paths moved under `work`; the config as run is kept as
    work/configs/NAME.yaml (or SAVED_AS.yaml: a stage that reuses another's YAML, as stage 2b2 does 2b's)."""
    path = save_stage_yaml(stage_yaml(name, work, **overrides), work, saved_as or name)
    return TrlParser(parsers).parse_args_and_config(args=["--config", str(path)])


def save_stage_yaml(config: dict, work: Path, name: str) -> Path:
    """A stage's config as run, kept as work/configs/NAME.yaml."""
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def free_port() -> int:
    """A loopback TCP port free now, for a launched stage's processes to meet on (arms run side by side)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_stage(script: str, name: str, work: Path, processes: int, saved_as: str, overrides: dict) -> str:
    """Train a stage as `accelerate launch` would from the shell: `processes` CPU processes over gloo
    (configs/accelerate/cpu_ddp2.yaml), each with its share of the stage's threads and of its batch, so that a step
    sees the batch the YAML names. The config as run is kept as work/configs/NAME.yaml, as `stage_config` keeps it.
    Returns the threads as run ("2x1": two processes of one thread)."""
    config = stage_yaml(name, work, **overrides)
    batch = int(config.get("per_device_train_batch_size", 8))
    if batch % processes:
        raise ConfigError(
            f"{name}: its batch of {batch} does not split over {processes} processes; give --processes a divisor "
            f"of it or --set {name}.per_device_train_batch_size=N"
        )
    from assistant.threads import usable_cpus

    threads = max(1, int(config.get("threads") or usable_cpus()) // processes)
    config.update(per_device_train_batch_size=batch // processes, threads=threads)
    path = save_stage_yaml(config, work, saved_as or name)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_ddp2.yaml"),
        "--num_processes", str(processes), "--main_process_port", str(free_port()),
        str(ROOT / "training" / f"{script}.py"), "--config", str(path),
    ]  # fmt: skip
    log.info("%s: %d processes of %d thread(s): %s", name, processes, threads, " ".join(command))
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, check=False)
    if done.returncode:
        raise RuntimeError(
            f"{saved_as or name} failed in its {processes} training processes (exit {done.returncode}); their log "
            f"is above. The config they ran is {path}; fix the cause and rerun the recipe (finished stages are "
            "kept), or run the stage alone with `accelerate launch ... --config` on that file"
        )
    return f"{processes}x{threads}"


def evaluate(
    model_dir: Path, data: dict[str, Path], out: Path, limit: int, blind: bool, probe_n: int = 0
) -> dict:
    """Skill VQA and POPE, in-process, and the probe; for the final model (`blind`) also the blind baseline,
    CHAIR, and text questions with and without the service's OCR hints."""
    from evals.config import EvalArgs
    from evals.jobs import run_benchmark
    from evals.probe import run_probe

    # a resumed recipe reuses evals made of this model with these settings
    summary, settings_file = out / "summary.json", out / "settings.json"
    settings = {
        "limit": limit,
        "blind": blind,
        "probe_n": probe_n,
        "data": {k: str(v) for k, v in data.items() if k.startswith("eval_")},  # what the evals read
    }
    if (
        summary.is_file()
        and settings_file.is_file()
        and json.loads(settings_file.read_text()) == settings
        and summary.stat().st_mtime > (model_dir / "config.json").stat().st_mtime
    ):
        log.info("evals of %s: done before with the same settings, read from %s", model_dir, summary)
        return Reused(json.loads(summary.read_text()))
    runs = [("vqa", "vqa", "eval_vqa", "off"), ("pope", "pope", "eval_pope", "off")]
    if blind:
        runs += [("chair", "chair", "eval_chair", "off")]
        runs += [("text", "vqa", "eval_ocr", "off"), ("text_ocr_hints", "vqa", "eval_ocr", "auto")]
    results: dict = {}
    for name, bench, key, ocr in runs:
        args = EvalArgs(
            data=str(data[key]), out=str(out / name), model=str(model_dir), blind=blind, limit=limit, ocr=ocr
        )
        report, _ = run_benchmark(bench, args)
        results[name] = {mode: sections for mode, sections in report.scores.items()}
    if probe_n:
        results["probe"] = run_probe(model_dir, out / "probe", n=probe_n)["scores"]
    summary.write_text(json.dumps(results, indent=1))
    settings_file.write_text(json.dumps(settings, indent=1))
    return results


class Stage0Job:
    """Stage 0 (`training/bootstrap.py`) in a process of its own, started before the data step so that the two run
    side by side. Stage 0 trains at a fixed thread count (one in configs/toy/bootstrap.yaml: its weights depend on
    it), which leaves the other core of a two-core machine to the data step's rendering and OCR hints; its weights
    are the same as when it runs alone (the process starts fresh and seeds everything itself). Session 52, the one
    run's data step and stage 0 on an idle 2-core Intel machine: 643 s side by side against 965 s one after the
    other, the same bytes (`python -m benchmarks.recipe_start`; docs/recipe.md)."""

    def __init__(self, config: tuple):
        import multiprocessing

        self.threads = max(1, config[0].threads or torch.get_num_threads())
        self.start = time.perf_counter()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_stage0_main, args=(config, logging.getLogger().getEffectiveLevel()), name="stage0"
        )
        self.process.start()
        log.info(
            "stage 0: started beside the data step (process %d, %d torch threads)",
            self.process.pid,
            self.threads,
        )

    def wait(self) -> None:
        self.process.join()
        if self.process.exitcode != 0:
            raise RuntimeError(
                f"stage 0 failed in its process (exit code {self.process.exitcode}); its traceback is in the log "
                "above. Fix it and run the recipe again: the data sets made are reused"
            )
        log.info("stage 0: done in %.0f s (beside the data step)", time.perf_counter() - self.start)

    def __enter__(self) -> Stage0Job:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        """The work done beside stage 0 failed (or was interrupted): stop stage 0 too."""
        if kind is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _stage0_main(config: tuple, level: int) -> None:
    """Stage0Job's process: bootstrap.main on `config`, logging at the recipe's level."""
    from training import bootstrap

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bootstrap.main(*config)


def smoke_sizes(args: RecipeArgs) -> None:
    """With --smoke, the data sets' and evals' sizes cut to a handful (in place)."""
    if args.smoke:
        args.n_caption, args.n_instruct, args.n_preference, args.n_eval, args.eval_limit = 16, 16, 8, 6, 6
        args.n_rl = args.n_focus = args.n_refresh = 8
        args.probe_n = min(args.probe_n, 8)


def run(args: RecipeArgs) -> Path:
    from training import dpo, merge, pretrain, sft

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    # seconds each step took when it did its work; a resumed recipe keeps those of the steps it skips
    timings_file = work / "timings.json"
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    # the torch threads each step ran with (each training stage chooses its own: assistant/threads.py)
    threads_file = work / "threads.json"
    threads: dict[str, int | str] = json.loads(threads_file.read_text()) if threads_file.is_file() else {}
    metrics: dict[str, dict] = {}

    def timed(name: str, fn, *a, ran_with: Callable[[Any], int | str] | None = None):
        """fn(*a), its seconds and threads recorded under `name`; the threads are this process's torch threads,
        or ran_with(result) for work done in other processes."""
        start = time.perf_counter()
        result = fn(*a)
        seconds = round(time.perf_counter() - start, 1)
        if isinstance(result, Reused) and name in timings:
            log.info("%s: done before (%.0f s then)", name, timings[name])
        else:
            timings[name] = seconds
            threads[name] = ran_with(result) if ran_with else torch.get_num_threads()
            log.info("%s: %.0f s (torch threads: %s)", name, seconds, threads[name])
            timings_file.write_text(json.dumps(timings, indent=1))
            threads_file.write_text(json.dumps(threads, indent=1))
        return result

    smoke_sizes(args)
    extra = args.stage_overrides()
    earlier = Path(args.continue_from).parent if args.continue_from else None
    stage0 = (earlier or work) / "stage0"
    stage0_job = None
    if not earlier and not (stage0 / "stage0_report.json").is_file():
        stage0_job = Stage0Job(stage0_config(work, args.seed, args.smoke, extra.get("bootstrap")))
    with stage0_job or contextlib.nullcontext():
        data = timed("data", make_data, args, work, stage0_job.threads if stage0_job else 0)
    if stage0_job:
        # the seconds stage 0 adds after the data step, so that a build's timings still add up to its wall time
        timed("stage0_after_data", stage0_job.wait, ran_with=lambda _: stage0_job.threads)
    report_file = stage0 / "stage0_report.json"
    stage0_report = json.loads(report_file.read_text()) if report_file.is_file() else {}

    small = SMOKE_STAGES if args.smoke else {}
    qformer = args.connector == "qformer"
    # stage 0's work for stage 1 (the layer it reads, the Q-Former's tower and slots); a continued run has no stage 1
    layer = {} if earlier else {"vision_feature_layer": stage0_report["vision"]["vision_feature_layer"]}
    if qformer and not earlier and not (stage0 / "vision_blip2" / "blip2_tower_report.json").is_file():
        from training.stage0.blip2_tower import TowerArgs, distill

        tower_args = TowerArgs(
            clip=str(stage0 / "vision"),
            out=str(stage0 / "vision_blip2"),
            feature_layer=layer["vision_feature_layer"],
            seed=args.seed,
        )
        if args.smoke:
            tower_args.steps, tower_args.eval_scenes = 3, 4
        timed("stage0_blip2_tower", distill, tower_args)

    stage1_qformer = (
        stage_yaml("pretrain_qformer", work, **extra.get("pretrain_qformer", {})) if qformer else {}
    )
    slots = None if earlier else stage1_qformer.get("qformer_init")
    if slots and not (Path(slots) / "qformer_report.json").is_file():
        from training.stage0.qformer import QFormerArgs
        from training.stage0.qformer import pretrain as pretrain_slots

        slot_args = QFormerArgs(
            tower=str(stage0 / "vision_blip2"),
            out=slots,
            num_query_tokens=stage1_qformer.get("num_query_tokens", 32),
            qformer_layers=stage1_qformer.get("qformer_layers", 2),
            qformer_hidden=stage1_qformer.get("qformer_hidden"),
            qformer_heads=stage1_qformer.get("qformer_heads"),
            seed=args.seed,
        )
        if args.smoke:
            slot_args.steps, slot_args.eval_scenes = 3, 4
        timed("stage0_qformer_slots", pretrain_slots, slot_args)

    def config_of(name: str) -> str:
        """The stage's YAML: NAME_qformer.yaml for the Q-Former where it exists."""
        return f"{name}_qformer" if qformer and (CONFIGS / f"{name}_qformer.yaml").is_file() else name

    stages = [
        (
            "stage1",
            config_of("pretrain"),
            pretrain.main,
            (pretrain.PretrainScriptArgs, SFTConfig, ModelConfig),
            {**layer, **small},
        ),
        ("stage2", config_of("sft"), sft.main, (sft.SFTScriptArgs, SFTConfig, ModelConfig), small),
    ]
    if earlier:
        stages = []  # the earlier run's model takes stage 2's place
    elif args.skip_stage2:
        stages = stages[:1]  # the focus phase starts from stage 1
    # the focus phase: one skill alone until its late transition (2b; 2b2, ... after it), then stage 2's data
    # again (2c)
    tuned = work / "stage2"
    pinned: dict[str, dict] = {}  # a stage's settings that --set does not override
    if args.focus_task:
        sft_parsers = (sft.SFTScriptArgs, SFTConfig, ModelConfig)
        previous = Path(args.continue_from) if earlier else work / "stage1" if args.skip_stage2 else tuned
        checks = args.focus_checks()
        for i, stage in enumerate(args.focus_stages(), start=args.first_focus()):
            name = focus_name("stage2b", i)
            focus = {
                "model_name_or_path": str(previous),
                "dataset": str(data[focus_name("focus", i)]),
                "output_dir": str(work / name),
            }
            epochs = {"num_train_epochs": stage.epochs} if stage.epochs else {}  # wins over --set sft_focus.*
            pinned[name] = {**extra.get(name, {}), **epochs}
            if name in checks:
                check_task, stop_at = checks[name]
                pinned[name] = {
                    "skill_check_data": str(data[f"check_{check_task}"]),
                    "skill_check_limit": 250,
                    "skill_check_stop_at": stop_at,
                    **pinned[name],
                }
            stages.append((name, "sft_focus", sft.main, sft_parsers, {**focus, **small}))
            previous = work / name
        refresh_data = {"dataset": str(data["refresh"])} if args.refresh_task else {}
        refresh = {"model_name_or_path": str(previous), **refresh_data}
        stages.append(("stage2c", "sft_refresh", sft.main, sft_parsers, {**small, **refresh}))
        tuned = work / "stage2c"
    from_tuned = {} if tuned.name == "stage2" else {"model_name_or_path": str(tuned)}
    if args.runs_dpo:
        stages.append(
            (
                "stage3",
                config_of("dpo"),
                dpo.main,
                (dpo.DPOScriptArgs, DPOConfig, ModelConfig),
                {**small, **from_tuned},
            )
        )
    for out_name, config_name, main, parsers, overrides in stages:
        out = work / out_name
        if not _done(out):
            settings = {
                "seed": args.seed,
                **overrides,
                **extra.get(config_name, {}),
                **pinned.get(out_name, {}),
            }
            saved_as = out_name if out_name in pinned and out_name != "stage2b" else ""
            script = {pretrain.main: "pretrain", sft.main: "sft"}.get(main)  # DPO stays in this process
            if args.processes > 1 and script:  # in processes of their own, as `accelerate launch` runs them
                launch = (script, config_name, work, args.processes, saved_as, settings)
                timed(out_name, launch_stage, *launch, ran_with=str)  # launch_stage returns "2x1"
            else:
                timed(out_name, main, *stage_config(config_name, work, parsers, saved_as, **settings))
        if out_name != "stage3":
            metrics[out_name] = timed(
                f"eval_{out_name}",
                evaluate,
                out,
                data,
                work / "evals" / out_name,
                args.eval_limit,
                False,
                args.probe_n,
            )

    def made_and_evaluated(name: str, step: str, make: Callable[[Path], object]) -> Path:
        """work/NAME made once by `make(out)` (timed as `step`) and scored in full (blind, CHAIR, text) as NAME."""
        out = work / name
        if not _done(out):
            timed(step, make, out)
        metrics[name] = timed(
            f"eval_{name}", evaluate, out, data, work / "evals" / name, args.eval_limit, True, args.probe_n
        )
        return out

    def merged_and_evaluated(adapter: str, name: str, suffix: str = "") -> Path:
        """The adapter stage merged into work/NAME in float16 and scored in full."""
        return made_and_evaluated(
            name,
            f"merge{suffix}",
            lambda out: merge.main(
                merge.MergeArgs(adapter=str(work / adapter), out=str(out), dtype="float16")
            ),
        )

    if not args.runs_dpo:  # --ship sft: stage 2c in float16, as the merged models are
        shipped = made_and_evaluated("final_sft", "export_sft", lambda out: export(tuned, out))
    else:
        final = shipped = merged_and_evaluated("stage3", "final")
    if args.grpo:
        from trl import GRPOConfig

        from training import grpo

        if not _done(work / "stage3b"):
            settings = {
                "seed": args.seed,
                **small,
                **(SMOKE_GRPO if args.smoke else {}),
                **from_tuned,
                **extra.get("grpo", {}),
            }
            parsers = (grpo.GRPOScriptArgs, GRPOConfig, ModelConfig)
            timed("stage3b", grpo.main, *stage_config("grpo", work, parsers, **settings))
        final_grpo = merged_and_evaluated("stage3b", "final_grpo", "_grpo")
        shipped = final_grpo if args.ship == "grpo" else final

    from training.model_card import time_line, write_model_card

    environment = {"torch threads by step": threads, "cpus": os.cpu_count()}
    card_timings = dict(timings)
    if earlier:  # the time to build this model includes the run it continues, and the runs that one continued
        card_timings = {f"earlier runs (to {earlier})": build_seconds(earlier), **timings}
    built = build_time(round(sum(card_timings.values()), 1), stage2_seconds(earlier or work))
    (work / "build_seconds.json").write_text(json.dumps(built) + "\n")
    log.info("%s", time_line(built))
    write_model_card(
        shipped,
        args=asdict(args),
        data=data,
        metrics=metrics,
        timings=card_timings,
        built=built,
        stage0=stage0,
        environment=environment,
    )
    if args.install:
        shutil.rmtree(DEFAULT_MODEL_DIR, ignore_errors=True)
        shutil.copytree(
            shipped, DEFAULT_MODEL_DIR, ignore=shutil.ignore_patterns("checkpoint-*", "runs", "*.bin")
        )
        log.info("installed the embedded default model into %s", DEFAULT_MODEL_DIR)
    return shipped


def parse_args(argv: list[str] | None = None) -> RecipeArgs:
    parser = argparse.ArgumentParser(description="Build the embedded default model with the toy recipe.")
    for f in RecipeArgs.__dataclass_fields__.values():
        if f.name == "set":
            parser.add_argument(
                "--set", action="append", default=[], metavar="CONFIG.KEY=VALUE", help=f.metadata["help"]
            )
        elif f.type in ("bool", "bool | None") or isinstance(f.default, bool):
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
    return RecipeArgs(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
