"""`assistant eval compare`: two runs' reports on one eval set, re-scored item by item, with paired intervals.

The answers are planted in each run's answer cache (a right answer for every question in run A, known mistakes in
run B), then the real benchmark jobs score them and write the reports that compare reads."""

from __future__ import annotations

import json

import pytest

from assistant.toyworld import SHAPES, make_dataset
from evals.clients import EvalError, InProcessClient
from evals.compare import compare, markdown
from evals.config import EvalArgs
from evals.data import LOADERS
from evals.jobs import run_benchmark


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare-sets")
    return {
        "vqa": make_dataset(root / "vqa", task="instruct", n=30, seed=0, eval_split=True),
        "pope": make_dataset(root / "pope", task="pope", n=10, seed=100_000, eval_split=True),
        "chair": make_dataset(root / "chair", task="chair", n=20, seed=200_000, eval_split=True),
    }


def _run(tmp_path, name, client, sets, answer_of, limit=None) -> None:
    """Evaluate run `name`: every answer comes from a planted cache, `answer_of(bench, index, row)`. A set whose name
    is no benchmark's (e.g. "color") is a VQA set, written under its own name."""
    for set_name, data in sets.items():
        bench = set_name if set_name in LOADERS else "vqa"
        out = tmp_path / name / set_name
        out.mkdir(parents=True)
        rows = [r for r in LOADERS[bench](data).rows if r.get("answer_type") != "free"]
        with (out / "answers.jsonl").open("w") as f:
            for i, row in enumerate(rows):
                answer = answer_of(bench, i, row)
                f.write(
                    json.dumps(
                        {
                            "question_id": row["question_id"],
                            "blind": False,
                            "model": client.name,
                            "answer": answer,
                        }
                    )
                    + "\n"
                )
        run_benchmark(bench, EvalArgs(data=str(data), out=str(out), limit=limit), client)


def _right(bench, i, row):
    if bench == "vqa":
        return row["answer"]
    if bench == "pope":
        return row["label"].capitalize()
    return row["reference"]  # the scene's canonical description: every object, relations that hold


def _worse(bench, i, row):
    if bench == "vqa":
        return "zzz" if i % 2 else row["answer"]  # half the questions unanswered
    if bench == "pope":
        return "Yes"  # yes to everything
    absent = next(s for s in SHAPES if s not in row["objects"])
    return (
        _right(bench, i, row)
        + f' The {absent} is above the {absent}. The word "QXZQ" is written on the left.'
    )  # an invented object, a false relation, an invented text


def test_compare_finds_the_planted_changes_and_none_between_equal_runs(tiny_assistant, sets, tmp_path):
    client = InProcessClient(tiny_assistant)
    _run(tmp_path, "a", client, sets, _right)
    _run(tmp_path, "b", client, sets, _worse)
    _run(tmp_path, "a2", client, sets, _right)
    rows = {(r.benchmark, r.metric): r for r in compare(tmp_path / "a", tmp_path / "b", resamples=500)}
    vqa = rows[("vqa", "accuracy")]
    assert vqa.a == 1.0 and vqa.b == pytest.approx(1 - (vqa.n // 2) / vqa.n)  # odd indices wrong
    assert vqa.changed and vqa.high < 0 < vqa.a - vqa.b
    assert any(metric.startswith("accuracy (") for _, metric in rows)  # per task too
    pope = rows[("pope", "yes_ratio")]
    assert pope.b == 1.0 and pope.changed and pope.low > 0
    assert rows[("pope", "f1")].a == 1.0 and rows[("pope", "f1")].changed
    chair = rows[("chair", "chair_i")]
    assert chair.a == 0.0 and chair.b > 0 and chair.changed
    assert rows[("chair", "coverage")].a == rows[("chair", "coverage")].b == 1.0  # nothing dropped
    relations = rows[
        ("chair", "relations.accuracy")
    ]  # toy-world scenes: relation sentences checked on the layout
    assert relations.a == 1.0 and relations.b < 1.0 and relations.changed
    assert (
        rows[("chair", "relations.per_description")].b == rows[("chair", "relations.per_description")].a + 1
    )
    invented = rows[("chair", "texts.invented_per_description")]  # quoted text checked on the scene's texts
    assert invented.a == 0.0 and invented.b == 1.0 and invented.changed
    same = compare(tmp_path / "a", tmp_path / "a2", resamples=200)
    assert all(r.diff == 0 and r.low == r.high == 0 and not r.changed for r in same)
    table = markdown(list(rows.values()), tmp_path / "a", tmp_path / "b")
    assert "| vqa | accuracy |" in table and " *" in table


def test_compare_reads_every_shared_eval_and_the_crowded_questions(tiny_assistant, tmp_path):
    color = make_dataset(tmp_path / "color", task="color", n=80, seed=5, eval_split=True)
    client = InProcessClient(tiny_assistant)
    _run(tmp_path, "a", client, {"color": color}, _right)
    _run(tmp_path, "b", client, {"color": color}, _worse)
    rows = {(r.benchmark, r.metric): r for r in compare(tmp_path / "a", tmp_path / "b", resamples=300)}
    everything = rows[("color", "accuracy")]  # a VQA set in its own directory (scripts/api_eval.sh's color/)
    assert everything.a == 1.0 and everything.changed
    assert ("color", "accuracy (color)") not in rows  # one task: its rows are "all"
    crowded = rows[
        ("color", "accuracy (color@4+)")
    ]  # scenes of four or more objects, as #14's goals count them
    assert 0 < crowded.n < everything.n and crowded.a == 1.0 and crowded.b < 1.0


def test_compare_refuses_runs_on_different_data(tiny_assistant, sets, tmp_path):
    client = InProcessClient(tiny_assistant)
    _run(tmp_path, "a", client, {"vqa": sets["vqa"]}, _right)
    other = make_dataset(tmp_path / "other", task="instruct", n=30, seed=7, eval_split=True)
    _run(tmp_path, "b", client, {"vqa": other}, _right)
    with pytest.raises(EvalError, match="scored different data"):
        compare(tmp_path / "a", tmp_path / "b")
    with pytest.raises(EvalError, match="share no vqa, pope or chair report"):
        compare(tmp_path / "a" / "vqa", tmp_path / "b")
    # the same set at another --limit: said so, not a rescoring mismatch
    _run(tmp_path, "short", client, {"vqa": sets["vqa"]}, _right, limit=5)
    with pytest.raises(
        EvalError, match=r"\(limit None\) questions, .*\(limit 5\); evaluate both with one --limit"
    ):
        compare(tmp_path / "a", tmp_path / "short")
