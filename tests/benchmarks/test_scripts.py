"""Every benchmark script runs end to end with its tiny settings (--quick / --tiny) and writes its report.
No timing is asserted: these check that the code paths work and the reports hold what they promise."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from benchmarks import (
    connectors,
    eval_batching,
    gpu,
    ocr_hints,
    preprocess,
    recipe_processes,
    recipe_start,
    serve,
    toyworld_data,
    train,
    train_batching,
)
from benchmarks.common import run_cli


@pytest.mark.slow  # 47 s: five servers and engines; `python -m benchmarks.serve` is run for RESULTS.md anyway
def test_serve_quick_runs_every_contender(tiny_model_dir, tmp_path):
    out, png = tmp_path / "serve.json", tmp_path / "serve.png"
    report = serve.main(
        serve.parse_args(["--quick", "--model", str(tiny_model_dir), "--out", str(out), "--plot", str(png)])
    )
    assert json.loads(out.read_text())["benchmark"] == "serve"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = report["results"]
    assert set(results) == {"generate", "naive", "project", "engine", "paired_c1"}
    assert results["paired_c1"]["pairs"] == 2 and results["paired_c1"]["latency_ratio"]["median"] > 0
    assert set(results["project"]) == {"1", "2"} and set(results["naive"]) == {"1"}
    for row in [results["generate"], *results["naive"].values(), *results["project"].values()]:
        assert row["mean_output_tokens"]["median"] >= 1  # every contender really generated
        assert row["output_tokens_per_s"]["median"] > 0
        assert row["ttft_s"]["median"] <= row["latency_s"]["median"]
    assert {"c1_latency_vs_generate", "engine_c1_latency_vs_generate"} <= set(report["ratios"])
    assert report["model"]["kind"] == "given"


@pytest.mark.slow  # two servers; `python -m benchmarks.connectors` is run for docs/connectors.md anyway
def test_connectors_quick_compares_an_mlp_and_a_qformer_model(tiny_model_dir, tiny_qformer_dir, tmp_path):
    out = tmp_path / "connectors.json"
    models = f"{tiny_model_dir},{tiny_qformer_dir}"
    report = connectors.main(connectors.parse_args(["--quick", "--models", models, "--out", str(out)]))
    assert json.loads(out.read_text())["benchmark"] == "connectors"
    mlp, qformer = report["results"][str(tiny_model_dir)], report["results"][str(tiny_qformer_dir)]
    assert (
        qformer["architecture"] == "Blip2ForConditionalGeneration" and qformer["visual_tokens_per_image"] == 4
    )
    assert mlp["visual_tokens_per_image"] > 4  # AnyRes: base view + tiles + newlines
    assert qformer["kv_bytes_per_request"] < mlp["kv_bytes_per_request"]
    for row in (mlp, qformer):
        assert row["ttft_ms_c1"] > 0 and row["output_tokens_per_s_c2"] > 0
    assert report["ratios_to_baseline"][str(tiny_model_dir)]["ttft_ms_c1"] == 1.0
    # paired rounds: both servers up at once, each round's TTFT over the baseline's of the same round
    assert mlp["paired_ttft_ratio_c1"]["median"] == 1.0 and mlp["paired_ttft_ratio_c1"]["n"] == 2
    assert qformer["paired_ttft_ms_c1"] > 0 and qformer["paired_ttft_ratio_c1"]["min"] > 0


def test_eval_batching_quick_compares_batches_with_one_question_at_a_time(tiny_model_dir, tmp_path):
    out = tmp_path / "eval_batching.json"
    report = eval_batching.main(
        eval_batching.parse_args(["--quick", "--model", str(tiny_model_dir), "--out", str(out)])
    )
    assert json.loads(out.read_text())["benchmark"] == "eval_batching"
    rows = {(r["benchmark"], r["batch_size"]): r for r in report["rows"]}
    assert set(rows) == {(b, n) for b in ("vqa", "pope", "chair", "probe") for n in (1, 4)}
    for (bench, batch), row in rows.items():
        assert row["questions"] == 8 and row["questions_per_s"] > 0
        assert row["answers_differing_from_baseline"] == 0  # greedy, the same answers batched
        assert row["scores"] == rows[bench, 1]["scores"]
        if batch == 1:
            assert row["ratio_to_baseline"] == 1.0
    assert (
        rows["probe", 1]["max_feature_difference"] == 0.0
        and rows["probe", 4]["max_feature_difference"] < 1e-4
    )


def test_preprocess_quick_measures_anyres_and_ocr(tiny_model_dir, tmp_path):
    out = tmp_path / "pre.json"
    report = preprocess.main(
        preprocess.parse_args(["--quick", "--model", str(tiny_model_dir), "--out", str(out)])
    )
    anyres = report["anyres"]
    assert anyres["reference_class"] == "LlavaNextImageProcessorPil"
    for row in anyres["sets"].values():
        assert row["allclose"] is True
        assert row["fast_images_per_s"]["median"] > 0 and row["reference_images_per_s"]["median"] > 0
    ocr = report["ocr"]
    assert ocr["per_image"][0]["cached"] is True  # the second read of an image comes from the cache
    for share in ocr["share_of_ttft"].values():
        assert 0.0 < share["median"] < 1.0
    assert json.loads(out.read_text())["benchmark"] == "preprocess"


@pytest.mark.slow  # 17 s: stage 0 to 3; tests/training runs every stage for real
def test_train_quick_runs_every_stage(tmp_path):
    out = tmp_path / "train.json"
    args = train.parse_args(
        ["--quick", "--steps", "2", "--stage0-steps", "2", "--batch", "2", "--out", str(out)]
    )
    report = train.main(args)
    stages = report["stages"]
    assert set(stages) == {"stage0_vision", "stage0_language", "stage1", "stage2", "stage3"}
    for name, row in stages.items():
        assert row["tokens_per_s"] > 0, name
        assert 0.0 < row["mfu"] < 1.0, name
    assert stages["stage2"]["steps"] == 2
    assert report["matmul_peak_flops"] > 0


def test_train_batching_quick_compares_samplers_against_the_baseline(tiny_model_dir, tmp_path):
    out = tmp_path / "train_batching.json"
    report = train_batching.main(
        train_batching.parse_args(["--quick", "--model", str(tiny_model_dir), "--out", str(out)])
    )
    rows = {(r["sampler"], r["threads"]): r for r in report["rows"]}
    assert set(rows) == {("random", 1), ("group_by_length", 1)}
    assert rows["random", 1]["ratio_to_baseline"] == 1.0
    assert all(r["samples_per_s"] > 0 for r in rows.values())
    assert rows["group_by_length", 1]["real_token_share"] > rows["random", 1]["real_token_share"]
    assert json.loads(out.read_text())["baseline"] == "random sampler, 1 thread(s)"


def test_recipe_start_quick_runs_stage_0_beside_the_data_step_to_the_same_bytes(tmp_path):
    out = tmp_path / "recipe_start.json"
    report = recipe_start.main(
        recipe_start.parse_args(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    )  # main raises where the two arms' weights, tokenizer or data differ
    assert report["identical"] == {"stage0": True, "tokenizer": True, "data": True}
    assert set(report["side_by_side_s"]) == {"data", "stage0_after_data", "total"}
    assert report["one_after_the_other_s"]["stage0"] > 0 and report["speedup"] > 0
    assert (tmp_path / "work" / "side_by_side" / "stage0" / "vision" / "model.safetensors").is_file()
    assert json.loads(out.read_text())["identical"]["stage0"]


def test_ocr_hints_quick_reads_in_one_and_two_processes_alike(tmp_path):
    out = tmp_path / "ocr_hints.json"
    report = ocr_hints.main(ocr_hints.parse_args(["--quick", "--out", str(out)]))
    rows = {r["workers"]: r for r in report["rows"]}
    assert set(rows) == {1, 2, "threaded"} and rows[1]["ratio_to_baseline"] == 1.0
    assert all(r["images_per_s"] > 0 for r in rows.values()) and rows[2]["same_hints"]
    # >= 4 images: the pool really ran (main raises where two counts' hints differ)
    assert report["counts"]["hinted"] >= 4
    assert json.loads(out.read_text())["baseline"] == "1 process(es)"


def test_toyworld_data_quick_writes_fewer_images_with_the_same_pixels(tmp_path):
    out = tmp_path / "toyworld_data.json"
    report = toyworld_data.main(toyworld_data.parse_args(["--quick", "--out", str(out)]))
    rows = {r["condition"]: r for r in report["rows"]}  # main raises where pixels or bytes differ
    assert set(rows) == {"before", 1, 2} and rows["before"]["ratio_to_baseline"] == 1.0
    assert rows["before"]["images"] == 600 and 0 < rows[1]["images"] == rows[2]["images"] < 600
    assert json.loads(out.read_text())["benchmark"] == "toyworld_data"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_gpu_refuses_quickly_without_cuda(caplog):
    assert gpu.main([]) == 2
    assert "CUDA is not available" in caplog.text and "--tiny" in caplog.text


def test_gpu_tiny_dry_run_covers_every_path(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--tiny", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["copy_bandwidth_bytes_per_s"] > 0
    # TPOT is a difference of two timings: on a busy machine the tiny model's few decode steps can drown in the
    # noise (the script warns), so only its presence is checked here, not its sign
    assert math.isfinite(report["batch1"]["tpot_s"]) and report["batch1"]["ttft_s"] > 0
    assert report["batch1"]["floor_tpot_s"] > 0
    assert set(report["engine"]) == {"1", "8"}
    assert all(row["mean_output_tokens"] >= 1 for row in report["engine"].values())


@pytest.mark.parametrize(
    "module,argv,message",
    [
        (serve, ["--repeats", "0"], "--repeats must be >= 1"),
        (preprocess, ["--images", "0"], "--images must be >= 1"),
        (train, ["--steps", "0"], "--steps must be >= 1"),
        (gpu, ["--max-tokens", "1"], "max_tokens must be >= 2"),
    ],
)
def test_bad_arguments_get_one_clear_line(module, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_bad_model_dir_is_one_clear_line(tmp_path, caplog):
    args = preprocess.parse_args(["--quick", "--model", str(tmp_path), "--out", str(tmp_path / "out.json")])
    assert run_cli(preprocess.main, args) == 1
    assert "has no config.json" in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "out.json").exists()


def test_threads_ratios_compare_as_shipped_with_the_best_fixed_setting():
    from benchmarks.threads import ratios, table

    def row(latency, tok_s, img_s, samples):
        return {
            "serving": {
                "engine_threads": 1,
                "c1_latency_s": {"median": latency},
                "c8_output_tokens_per_s": {"median": tok_s},
            },
            "preprocessing": {"images_per_s": {"median": img_s}},
            "training": {k: {"samples_per_s": samples} for k in ("stage1", "stage2", "stage3")},
        }

    rows = {
        "idle": {
            "as shipped": row(0.10, 300, 900, 4.0),
            "1 thread": row(0.10, 300, 900, 4.0),
            "2 threads": row(0.08, 400, 1000, 5.0),
        },
        "one core busy": {
            "as shipped": row(0.10, 300, 900, 4.0),
            "1 thread": row(0.10, 300, 900, 4.0),
            "2 threads": row(2.0, 20, 100, 1.0),
        },
    }
    r = ratios(rows)
    assert r["idle"]["serving c=1 latency"] == {"shipped_vs_best": 1.25, "best": "2 threads"}
    assert r["idle"]["serving c=8 tok/s"]["shipped_vs_best"] == pytest.approx(4 / 3, abs=1e-3)
    assert r["one core busy"]["training stage2 samples/s"] == {"shipped_vs_best": 1.0, "best": "1 thread"}
    text = table(rows, r)
    assert "| idle | serving c=1 latency | 1.25x | 2 threads |" in text


@pytest.mark.slow
def test_threads_quick_measures_every_setting_idle_and_busy(tiny_model_dir, tmp_path, monkeypatch):
    from benchmarks import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "threads.json"
    report = threads.main(threads.parse_args(["--quick", "--model", str(tiny_model_dir), "--out", str(out)]))
    assert set(report["results"]) == {"idle", "one core busy"}
    for by_setting in report["results"].values():
        assert set(by_setting) == {"as shipped", "1 thread"}
        assert by_setting["as shipped"]["serving"]["engine_threads"] == 1  # the rule, for a tiny model
        assert by_setting["1 thread"]["training"]["stage2"]["samples_per_s"] > 0
    assert "serving c=8 tok/s" in report["ratios"]["one core busy"]
    assert json.loads(out.read_text())["benchmark"] == "threads"


def test_recipe_processes_quick_trains_one_stage_in_one_process_and_in_two(tmp_path):
    out = tmp_path / "recipe_processes.json"
    report = recipe_processes.main(
        recipe_processes.parse_args(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    )
    assert report["one_process"]["threads"] == "1x2" and report["two_processes"]["threads"] == "2x1"
    assert report["one_process"]["s_per_step"] > 0 and report["speedup_a_step"] > 0
    for arm, batch in (("processes_1", 4), ("processes_2", 2)):  # two processes, half the batch each
        state = json.loads((tmp_path / "work" / arm / "trainer_state.json").read_text())
        assert state["global_step"] == 6
        config = yaml.safe_load((tmp_path / "work" / "configs" / f"{arm}.yaml").read_text())
        assert config["per_device_train_batch_size"] == batch
    assert json.loads(out.read_text())["baseline"] == "1 process of 2 threads"
