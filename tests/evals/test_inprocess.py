"""The in-process runner end to end on toy-world POPE and VQA sets with the untrained tiny model:
the report is written and its numbers agree with each other (not that they are good)."""

from __future__ import annotations

import json

import pytest

from assistant.messages import user_turn
from assistant.toyworld import make_dataset
from evals.clients import AnswerError, InProcessClient
from evals.config import EvalArgs
from evals.jobs import run_benchmark
from evals.runner import AnswerCache


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-eval")
    return {
        "pope": make_dataset(root / "pope", task="pope", n=2, seed=0, eval_split=True),
        "vqa": make_dataset(root / "vqa", task="instruct", n=3, seed=0, eval_split=True),
    }


def test_pope_in_process_with_blind_baseline(tiny_assistant, toy_sets, tmp_path):
    client = InProcessClient(tiny_assistant)
    args = EvalArgs(data=str(toy_sets["pope"]), out=str(tmp_path), blind=True, limit=8, max_tokens=3)
    report, paths = run_benchmark("pope", args, client)
    for kind in ("json", "md", "png"):
        assert paths[kind].is_file() and paths[kind].stat().st_size > 0
    data = json.loads(paths["json"].read_text())
    assert data["model"] == tiny_assistant.name and data["endpoint"] == "in-process"
    assert len(data["dataset"]["hash"]) == 16 and data["code_version"]
    rows = [json.loads(line) for line in (toy_sets["pope"] / "pope.jsonl").read_text().splitlines()][:8]
    n_yes = sum(r["label"] == "yes" for r in rows)
    for mode in ("image", "blind"):
        s = data["scores"][mode]["all"]
        assert s["n"] == 8
        assert s["tp"] + s["fn"] == n_yes  # unparseable "yes" questions are misses
        assert s["accuracy"] == pytest.approx((s["tp"] + s["tn"]) / 8)
        assert s["yes_ratio"] == pytest.approx((s["tp"] + s["fp"]) / 8)
        assert s["tn"] + s["fp"] <= 8 - n_yes and 0 <= s["unparseable"] <= 8
    gap = data["scores"]["gap"]["all"]["accuracy"]
    assert gap == pytest.approx(
        data["scores"]["image"]["all"]["accuracy"] - data["scores"]["blind"]["all"]["accuracy"]
    )
    cached = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert len(cached) == 16 and {json.loads(c)["blind"] for c in cached} == {True, False}
    assert "blind" in paths["md"].read_text()


def test_vqa_in_process_resumes_from_cache(tiny_assistant, toy_sets, tmp_path):
    client = InProcessClient(tiny_assistant)
    args = EvalArgs(data=str(toy_sets["vqa"]), out=str(tmp_path), limit=5, max_tokens=3)
    first, _ = run_benchmark("vqa", args, client)
    before = (tmp_path / "answers.jsonl").read_text()
    second, _ = run_benchmark("vqa", args, client)  # every answer comes from the cache
    assert (tmp_path / "answers.jsonl").read_text() == before
    assert first.scores == second.scores
    by_task = {k: v for k, v in first.scores["image"].items() if k != "all" and "@" not in k}
    by_crowd = {
        k: v for k, v in first.scores["image"].items() if "@" in k
    }  # skill@objects, from scenes.jsonl
    assert by_crowd and sum(v["n"] for v in by_crowd.values()) == first.scores["image"]["all"]["n"]
    n = first.scores["image"]["all"]["n"]
    assert sum(v["n"] for v in by_task.values()) == n
    assert first.scores["image"]["all"]["accuracy"] == pytest.approx(
        sum(v["accuracy"] * v["n"] for v in by_task.values()) / n
    )


def test_batched_answers_are_the_one_at_a_time_answers(tiny_assistant, toy_sets, tmp_path):
    client = InProcessClient(tiny_assistant)
    caches = {}
    for batch in (1, 4):
        args = EvalArgs(
            data=str(toy_sets["vqa"]),
            out=str(tmp_path / str(batch)),
            blind=True,
            max_tokens=4,
            batch_size=batch,
        )
        report, _ = run_benchmark("vqa", args, client)
        caches[batch] = AnswerCache(tmp_path / str(batch) / "answers.jsonl", client.name).answers
        assert report.errors == {"image": 0, "blind": 0}
    assert len(caches[1]) > 4 and caches[4] == caches[1]  # with and without images, several batches


def test_a_refused_question_fails_alone_in_its_batch(tiny_assistant, red_image, tmp_path):
    red_image.save(tmp_path / "red.png")
    client = InProcessClient(tiny_assistant)
    asks = [user_turn(q) for q in ("how many?", "what colour?", "what shape?", "where?")]
    too_long = user_turn("red " * 600)
    image = [tmp_path / "red.png"]
    conversations = [(asks[0], image), (too_long, image), *((ask, image) for ask in asks[1:])]
    replies = client.answer_batch(conversations, 4)
    assert isinstance(replies[1], AnswerError) and "context" in str(replies[1])
    assert [replies[0], *replies[2:]] == [client.answer(ask, image, 4) for ask in asks]


def test_chair_in_process_pins_the_prompt(tiny_assistant, tmp_path_factory, tmp_path):
    data = make_dataset(
        tmp_path_factory.mktemp("chair") / "chair", task="chair", n=2, seed=0, eval_split=True
    )
    args = EvalArgs(data=str(data), out=str(tmp_path), max_tokens=4)
    report, paths = run_benchmark("chair", args, InProcessClient(tiny_assistant))
    s = report.scores["image"]["all"]
    assert s["n"] == 2 and 0.0 <= s["chair_i"] <= 1.0 and s["hallucinated_mentions"] <= s["mentions"]
    assert (
        report.notes["prompt"] == "Please describe this image in detail." and report.notes["max_tokens"] == 4
    )
    assert paths["png"].is_file()
