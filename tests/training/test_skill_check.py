"""The held-out skill check inside a stage (training/skill_check.py), on a tiny model trained for real steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trl import ModelConfig, SFTConfig

from assistant.errors import ConfigError
from tests.training.conftest import train_config
from training import sft
from training.skill_check import check_accuracy, load_check_questions


@pytest.fixture(scope="module")
def colour_check(tmp_path_factory) -> Path:
    from assistant.toyworld import make_dataset

    return make_dataset(
        tmp_path_factory.mktemp("check") / "color", task="color", n=8, seed=5800000, eval_split=True
    )


def checks(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "skill_check.jsonl").read_text().splitlines()]


def own_answers_set(source: Path, model_dir: Path, out: Path) -> Path:
    """`source`'s questions with the model's own greedy answers as their gold (answer type text): the model scores
    1.0 on it until its weights move."""
    from assistant.inference import Assistant

    assistant = Assistant.load(model_dir, device="cpu")
    out.mkdir()
    (out / "images").symlink_to((source / "images").resolve())
    rows = []
    for q in load_check_questions(source, ["color"], 4):
        content = [{"type": "image", "image": q["image"]}, {"type": "text", "text": q["text"]}]
        answer = assistant.chat(
            [{"role": "user", "content": content}], max_new_tokens=16, temperature=0.0
        ).text
        rows.append(
            {**q, "image": str(Path(q["image"]).relative_to(source)), "answer": answer, "answer_type": "text"}
        )
    (out / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert check_accuracy(assistant, load_check_questions(out, [], 10)) == 1.0
    return out


def test_the_check_scores_every_n_steps_and_at_the_end_while_the_model_trains(
    tmp_path, toy_data, tiny_model_dir, colour_check
):
    from tests.training.test_stages import changed, weights

    out = sft.main(
        sft.SFTScriptArgs(
            dataset=str(toy_data["instruct"]),
            skill_check_data=str(colour_check),
            skill_check_tasks=["color"],
            skill_check_limit=5,
            skill_check_every=2,
        ),
        train_config(SFTConfig, tmp_path / "sft", max_steps=5),
        ModelConfig(model_name_or_path=str(tiny_model_dir)),
    )
    scores = checks(out)
    assert [s["step"] for s in scores] == [2, 4, 5]  # every 2 steps, then the last step once
    assert all(s["n"] == 5 and 0.0 <= s["accuracy"] <= 1.0 for s in scores)
    assert changed(weights(tiny_model_dir), weights(out), "language_model.")  # the checks leave training on
    assert (out / "skill_check.png").stat().st_size > 0  # the curve, beside the weights
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 5


def trained_with_check(tmp_path: Path, dataset: Path, model_dir: Path, check: Path, **check_args) -> Path:
    """Up to 8 steps at a zero rate, which keeps the answers the model gave: on `own_answers_set` every check
    scores 1.0."""
    script = sft.SFTScriptArgs(dataset=str(dataset), skill_check_data=str(check), **check_args)
    config = train_config(SFTConfig, tmp_path / "sft", max_steps=8, learning_rate=0.0)
    return sft.main(script, config, ModelConfig(model_name_or_path=str(model_dir)))


def test_a_stage_stops_once_the_check_reaches_stop_at(tmp_path, toy_data, tiny_model_dir, colour_check):
    check = own_answers_set(colour_check, tiny_model_dir, tmp_path / "own")
    out = trained_with_check(
        tmp_path, toy_data["instruct"], tiny_model_dir, check, skill_check_every=2, skill_check_stop_at=1.0
    )
    assert [(s["step"], s["accuracy"]) for s in checks(out)] == [(2, 1.0)]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert (out / "model.safetensors").is_file()  # the stopped stage is saved as a finished one


def test_a_stage_stops_once_the_check_levels_off(tmp_path, toy_data, tiny_model_dir, colour_check):
    check = own_answers_set(colour_check, tiny_model_dir, tmp_path / "own")
    out = trained_with_check(
        tmp_path, toy_data["instruct"], tiny_model_dir, check, skill_check_every=1, skill_check_patience=2
    )
    # the score stays where it starts, so two checks after the first there is no gain
    assert [s["step"] for s in checks(out)] == [1, 2, 3]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3


@pytest.mark.parametrize(
    "scores, levelled",
    [
        ([0.5, 0.6, 0.7], False),  # still rising
        ([0.5, 0.7, 0.705, 0.70], True),  # two checks without a gain of 0.01 over 0.7
        ([0.5, 0.7, 0.705, 0.72], False),  # the last beat it
        ([0.7, 0.6], False),  # fewer checks than patience + 1
    ],
)
def test_levelling_off_means_no_gain_of_min_delta_in_patience_checks(tmp_path, scores, levelled):
    from training.skill_check import SkillCheck

    check = SkillCheck([], None, every=1, stop_at=None, output_dir=tmp_path, patience=2, min_delta=0.01)
    check.scores = list(enumerate(scores))
    assert check.levelled_off() is levelled


def test_a_check_set_without_questions_of_its_tasks_is_refused(tmp_path, colour_check):
    with pytest.raises(ConfigError, match="no scorable questions"):
        load_check_questions(colour_check, ["count"], 10)
    with pytest.raises(ConfigError, match="no scorable questions"):
        load_check_questions(colour_check, [], 10, answer_types=["relation"])


def test_a_check_can_ask_some_answer_types_of_a_task_alone(tmp_path):
    from assistant.toyworld import make_dataset

    position = make_dataset(tmp_path / "position", task="position", n=30, seed=5810000, eval_split=True)
    every = load_check_questions(position, [], 100)
    relations = load_check_questions(position, [], 100, answer_types=["relation", "yes_no"])
    assert {q["answer_type"] for q in every} == {"region", "relation", "yes_no"}
    assert relations and {q["answer_type"] for q in relations} == {"relation", "yes_no"}
    assert [q["question_id"] for q in relations] == [
        q["question_id"] for q in every if q["answer_type"] != "region"
    ]
    with pytest.raises(ConfigError, match="no qa.jsonl"):
        load_check_questions(tmp_path, [], 10)


def test_the_curves_of_several_stages_plot_from_their_records(tmp_path):
    from training.skill_check import main, read_checks

    for name, rows in [
        ("a", [(100, 0.5), (200, 0.8)]),
        ("b", [(100, 0.5), (200, 0.55), (200, 0.55), (300, 0.9)]),
    ]:
        (tmp_path / name).mkdir()
        lines = [json.dumps({"step": step, "accuracy": acc, "n": 10}) for step, acc in rows]
        (tmp_path / name / "skill_check.jsonl").write_text("\n".join(lines) + "\n")
    assert read_checks(tmp_path / "b") == [
        (100, 0.5),
        (200, 0.55),
        (300, 0.9),
    ]  # a resumed run's repeat dropped
    out = main(
        [str(tmp_path / "a"), str(tmp_path / "b"), "--stop_at", "0.75", "--out", str(tmp_path / "c.png")]
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="--skill_check_data"):
        read_checks(tmp_path)
