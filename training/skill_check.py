"""A held-out skill check inside a training stage: every `every` steps the model answers the first `limit` questions
of a toy-world eval set (greedy, as `assistant eval vqa` asks them) and the stage stops once their accuracy reaches
`stop_at`.

A focus stage's skill forms in a late, sudden transition (colour by shape: from chance to 0.7-0.8 within a few
hundred steps), and when it comes varies with the seed and the machine: three epochs of `color_all` crossed in some
runs and not in others (docs/recipe.md, session 35). Fixed epochs therefore both spend steps after the crossing and
stop some runs before it; a check makes a stage run until the skill has formed, up to its epochs.

    python training/sft.py --config configs/toy/sft_focus.yaml --skill_check_data runs/toy/data/check_color \
        --skill_check_stop_at 0.8 --lr_scheduler_type constant_with_warmup
    python -m training.skill_check runs/K/stage2b runs/K1/stage2b --stop_at 0.75 --out checks.png   # their curves

A stage with a check writes its curve beside its weights as well (skill_check.png).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from transformers import TrainerCallback

from assistant.errors import ConfigError
from assistant.inference import Assistant
from assistant.messages import user_turn
from evals.data import load_qa
from evals.vqa import UNSCORED_TYPES, score_vqa
from training.common import setup_logging

log = logging.getLogger(__name__)
CHECK_BATCH = 16  # questions per left-padded generate (Assistant.chat_batch)


def load_check_questions(
    data: str | Path, tasks: list[str], limit: int, answer_types: list[str] | None = None
) -> list[dict]:
    """The first `limit` scorable questions of a toy-world eval set (its qa.jsonl), of `tasks` and `answer_types`
    if given (position's `relation` questions alone, say), with their images' paths made absolute."""
    data = Path(data)
    qa = data / "qa.jsonl"
    if not qa.is_file():
        raise ConfigError(
            f"skill check set {str(data)!r} has no qa.jsonl; make one with `assistant toyworld generate --task TASK "
            "--eval --out DIR`"
        )
    rows = [
        r
        for r in load_qa(data).rows  # the evals' own reader: every row's fields and image checked
        if r["answer_type"] not in UNSCORED_TYPES
        and (not tasks or r["task"] in tasks)
        and (not answer_types or r["answer_type"] in answer_types)
    ]
    if not rows:
        raise ConfigError(
            f"skill check set {str(data)!r} holds no scorable questions of tasks {tasks or 'any'} and answer types "
            f"{answer_types or 'any'}"
        )
    # the image as the path string load_qa resolved (its `image_path` is a Path, which a row written back as JSON
    # cannot hold)
    return [
        {**{k: v for k, v in r.items() if k != "image_path"}, "image": str(r["image_path"])}
        for r in rows[:limit]
    ]


def check_accuracy(assistant: Assistant, questions: list[dict]) -> float:
    """Greedy answers to `questions` (`CHECK_BATCH` a generate), scored as `assistant eval vqa` scores them
    (`evals.vqa.score_vqa`)."""
    conversations = [(user_turn(q["text"]), [q["image"]]) for q in questions]
    answers = [
        reply.text
        for start in range(0, len(conversations), CHECK_BATCH)
        for reply in assistant.chat_batch(conversations[start : start + CHECK_BATCH], max_new_tokens=16)
    ]
    return score_vqa(questions, answers).accuracy


class SkillCheck(TrainerCallback):
    """Scores the model on held-out questions every `every` steps (and at the end), logs each score and appends it
    to `skill_check.jsonl` in the output directory, and stops training once a score reaches `stop_at`, or once
    `patience` checks in a row have not beaten the best so far by `min_delta` (the skill has levelled off). With
    neither, the scores are only recorded."""

    def __init__(
        self,
        questions: list[dict],
        processor,
        every: int,
        stop_at: float | None,
        output_dir: str | Path,
        patience: int = 0,
        min_delta: float = 0.01,
    ) -> None:
        if every < 1:
            raise ConfigError(f"skill_check_every must be >= 1, got {every}")
        if stop_at is not None and not 0.0 < stop_at <= 1.0:
            raise ConfigError(f"skill_check_stop_at must be in (0, 1], got {stop_at}")
        if patience < 0 or min_delta < 0:
            raise ConfigError(
                f"skill_check_patience and skill_check_min_delta must be >= 0, got {patience} and {min_delta}"
            )
        self.questions, self.processor, self.every, self.stop_at = questions, processor, every, stop_at
        self.patience, self.min_delta = patience, min_delta
        self.path = Path(output_dir) / "skill_check.jsonl"
        self.scores: list[tuple[int, float]] = []

    def levelled_off(self) -> bool:
        """Whether none of the last `patience` checks beat the best before them by `min_delta`."""
        if not self.patience or len(self.scores) <= self.patience:
            return False
        best_before = max(a for _, a in self.scores[: -self.patience])
        return all(a < best_before + self.min_delta for _, a in self.scores[-self.patience :])

    def _score(self, model, step: int, main_process: bool = True) -> float:
        """The check at `step`; every process of a distributed run scores it (they hold the same weights, so they
        stop together), the main one records it."""
        if self.scores and self.scores[-1][0] == step:
            return self.scores[-1][1]
        was_training = model.training
        try:
            with torch.no_grad():
                accuracy = check_accuracy(Assistant(model, self.processor), self.questions)
        finally:
            model.train(was_training)
        self.scores.append((step, accuracy))
        if not main_process:
            return accuracy
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, "accuracy": accuracy, "n": len(self.questions)}) + "\n")
        log.info("skill check at step %d: %.3f on %d held-out questions", step, accuracy, len(self.questions))
        return accuracy

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every:
            return control
        accuracy = self._score(model, state.global_step, state.is_world_process_zero)
        if self.stop_at is not None and accuracy >= self.stop_at:
            log.info(
                "skill check reached %.3f >= %.3f at step %d of %d: stopping",
                accuracy,
                self.stop_at,
                state.global_step,
                state.max_steps,
            )
            control.should_training_stop = True
        elif self.levelled_off():
            log.info(
                "skill check levelled off at %.3f (no gain of %.3f in %d checks) at step %d of %d: stopping",
                max(a for _, a in self.scores),
                self.min_delta,
                self.patience,
                state.global_step,
                state.max_steps,
            )
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._score(model, state.global_step, state.is_world_process_zero)
        if state.is_world_process_zero:
            plot_checks({self.path.parent.name: self.scores}, self.path.with_suffix(".png"), self.stop_at)
        return control


def read_checks(stage_dir: str | Path) -> list[tuple[int, float]]:
    """A stage's recorded checks as [(step, accuracy)] (its skill_check.jsonl; a resumed run's repeats dropped)."""
    path = Path(stage_dir) / "skill_check.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; was the stage run with --skill_check_data?")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted({r["step"]: r["accuracy"] for r in rows}.items())


def plot_checks(curves: dict[str, list[tuple[int, float]]], path: Path, stop_at: float | None = None) -> Path:
    """Held-out accuracy against the step, one line per stage, with the stopping score dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, scores in curves.items():
        ax.plot([s for s, _ in scores], [a for _, a in scores], marker=".", label=label)
    if stop_at is not None:
        ax.axhline(stop_at, color="grey", linestyle="--", linewidth=1, label=f"stop at {stop_at:g}")
    ax.set(xlabel="step", ylabel="held-out accuracy", title="skill checks", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description="Plot the skill checks of stages run with --skill_check_data."
    )
    parser.add_argument("stages", nargs="+", help="Stage output directories (each with skill_check.jsonl).")
    parser.add_argument("--out", required=True, help="The PNG to write.")
    parser.add_argument("--stop_at", type=float, default=None, help="Draw this stopping score.")
    parser.add_argument("--labels", nargs="*", help="One label per stage (default: its parent/name).")
    args = parser.parse_args(argv)
    labels = args.labels or [f"{Path(s).parent.name}/{Path(s).name}" for s in args.stages]
    if len(labels) != len(args.stages):
        parser.error(f"{len(labels)} labels for {len(args.stages)} stages")
    out = plot_checks(
        {label: read_checks(s) for label, s in zip(labels, args.stages, strict=True)},
        Path(args.out),
        args.stop_at,
    )
    log.info("wrote %s", out)
    return out


if __name__ == "__main__":
    setup_logging()
    main()
