"""The eval runner end to end against this project's own server on a loopback port, serving the embedded
default model: the same POPE and VQA jobs the model card comes from, blind baseline included."""

from __future__ import annotations

import json

from assistant.toyworld import make_dataset
from evals.config import EvalArgs
from evals.jobs import run_benchmark
from tests.serving.conftest import API_KEY, running_server, server_settings


def test_runner_scores_the_embedded_model_through_the_real_server(tmp_path):
    data = {
        "pope": make_dataset(tmp_path / "pope", task="pope", n=6, seed=7, eval_split=True),
        "vqa": make_dataset(tmp_path / "vqa", task="instruct", n=12, seed=7, eval_split=True),
    }
    settings = server_settings(None, max_image_pixels=1_000_000, default_max_tokens=16)
    with running_server(settings) as (url, _):
        for bench, path in data.items():
            args = EvalArgs(
                data=str(path),
                out=str(tmp_path / f"report-{bench}"),
                base_url=url + "/v1",
                api_key=API_KEY,
                model=None if bench == "vqa" else "assistant-default",  # no --model: the one it serves
                concurrency=4,
                blind=True,
                limit=40,
            )
            report, paths = run_benchmark(bench, args)
            assert report.errors == {"image": 0, "blind": 0}
            assert set(report.scores) == {"image", "blind"} and report.endpoint == url + "/v1"
            assert json.loads(paths["json"].read_text())["benchmark"] == bench
            assert paths["md"].is_file() and paths["png"].stat().st_size > 0
            assert (tmp_path / f"report-{bench}" / "answers.jsonl").is_file()
        # the trained model beats its own blind baseline on the skill questions
        vqa = json.loads((tmp_path / "report-vqa" / "report.json").read_text())["scores"]
        assert vqa["image"]["all"]["accuracy"] > vqa["blind"]["all"]["accuracy"]
