"""The HTTP runner against a real OpenAI-compatible server on a loopback port (see toy_server.py):
scores, blind gap, retries after 500/429, resume from the cache, the judge, and the CLI."""

from __future__ import annotations

import json

import pytest

from assistant.cli import main as assistant_main
from assistant.toyworld import make_dataset
from evals.clients import EvalError, OpenAIClient
from evals.config import EvalArgs
from evals.jobs import run_benchmark

from .toy_server import ToyWorldServer


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-http")
    return {
        "pope": make_dataset(root / "pope", task="pope", n=4, seed=1, eval_split=True),
        "vqa": make_dataset(root / "vqa", task="instruct", n=6, seed=1, eval_split=True),
        "ocr": make_dataset(root / "ocr", task="ocr", n=8, seed=1, preset="ocr", eval_split=True),
    }


@pytest.fixture(scope="module")
def server(toy_sets):
    with ToyWorldServer(list(toy_sets.values())) as s:
        yield s


def _args(server, data, out, **kw):
    return EvalArgs(data=str(data), out=str(out), base_url=server.base_url, model="toy", concurrency=4, **kw)


def test_pope_over_http_with_retries_blind_gap_and_resume(server, toy_sets, tmp_path):
    report, paths = run_benchmark("pope", _args(server, toy_sets["pope"], tmp_path, blind=True))
    image, blind = report.scores["image"]["all"], report.scores["blind"]["all"]
    assert image["accuracy"] == 1.0 and image["unparseable"] == 0
    assert blind["accuracy"] == pytest.approx(0.5) and blind["yes_ratio"] == 1.0  # always "yes": chance
    assert report.gap()["all"]["accuracy"] == pytest.approx(0.5)
    assert server.failed, "the server should have refused some first calls"
    assert report.errors == {"image": 0, "blind": 0}  # every refused call was retried and answered
    data = json.loads(paths["json"].read_text())
    assert data["endpoint"] == server.base_url and data["config"]["api_key"] == "EMPTY"

    # resume: drop half of the cache; only the dropped answers are asked again
    cache = tmp_path / "answers.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    calls_before = sum(server.calls.values())
    again, _ = run_benchmark("pope", _args(server, toy_sets["pope"], tmp_path, blind=True))
    asked = sum(server.calls.values()) - calls_before
    assert len(lines) - len(lines) // 2 <= asked <= len(lines)  # dropped ones, some retried once
    assert again.scores == report.scores


def test_vqa_and_ocr_through_the_cli(server, toy_sets, tmp_path):
    common = ["--base-url", server.base_url, "--model", "toy", "--blind"]
    assert (
        assistant_main(["eval", "vqa", "--data", str(toy_sets["vqa"]), "--out", str(tmp_path / "v"), *common])
        == 0
    )
    vqa = json.loads((tmp_path / "v" / "report.json").read_text())
    assert vqa["scores"]["image"]["all"]["accuracy"] == 1.0
    assert vqa["scores"]["blind"]["all"]["accuracy"] < 1.0
    assert (
        assistant_main(["eval", "ocr", "--data", str(toy_sets["ocr"]), "--out", str(tmp_path / "o"), *common])
        == 0
    )
    ocr = json.loads((tmp_path / "o" / "report.json").read_text())
    assert (
        ocr["scores"]["image"]["all"]["exact_match"] == 1.0 and ocr["scores"]["image"]["all"]["anls"] == 1.0
    )
    assert ocr["scores"]["blind"]["all"]["exact_match"] == 0.0


def test_judge_over_http_records_prompt_and_reports_unparseable(server, toy_sets, tmp_path):
    args = _args(
        server, toy_sets["vqa"], tmp_path, blind=True, judge_base_url=server.base_url, judge_model="toy-judge"
    )
    report, _ = run_benchmark("judge", args)
    rows = [json.loads(line) for line in (toy_sets["vqa"] / "qa.jsonl").read_text().splitlines()]
    n_count = sum("how many" in r["text"].lower() for r in rows)
    assert n_count > 0
    image = report.scores["image"]["all"]
    assert image["n"] == len(rows) and image["unparseable"] == n_count
    assert image["hallucination_rate"] == 0.0 and image["mean_rating"] == 6.0
    assert report.scores["blind"]["all"]["hallucination_rate"] > 0.5  # "Yes." to everything
    assert report.notes["judge_model"] == "toy-judge" and "Rating: N" in report.notes["judge_template"]
    assert (tmp_path / "judge.jsonl").is_file()


def test_unreachable_endpoint_and_bad_input_give_one_line_errors(toy_sets, tmp_path, capsys):
    client = OpenAIClient("http://127.0.0.1:9/v1", "toy", max_retries=0, timeout=2)
    with pytest.raises(EvalError, match="could not reach"):
        run_benchmark("pope", EvalArgs(data=str(toy_sets["pope"]), out=str(tmp_path), limit=1), client)
    capsys.readouterr()
    assert assistant_main(["eval", "pope", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and len(err.splitlines()) == 1
    with pytest.raises(EvalError, match="could not reach"):
        run_benchmark(
            "pope", EvalArgs(data=str(toy_sets["pope"]), out=str(tmp_path), base_url="http://127.0.0.1:9/v1")
        )


def test_an_endpoint_with_several_models_asks_which(server, toy_sets, tmp_path):
    args = EvalArgs(data=str(toy_sets["pope"]), out=str(tmp_path), base_url=server.base_url)
    with pytest.raises(EvalError, match=r"serves 2 models \(toy, toy-large\); choose one with --model"):
        run_benchmark("pope", args)
