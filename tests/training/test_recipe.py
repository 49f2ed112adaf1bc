"""The toy recipe end to end in smoke mode: every step runs and the model card is written from real reports."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForImageTextToText

from training import ablations, model_card, recipe


def test_smoke_recipe_builds_a_loadable_model_with_a_model_card(tmp_path):
    work = ["--workdir", str(tmp_path / "toy"), "--smoke", "--no-install"]
    final = recipe.main([*work, "--set", "sft.learning_rate=1e-3"])
    assert final.name == "final"
    model = AutoModelForImageTextToText.from_pretrained(final)
    assert type(model).__name__ == "LlavaNextForConditionalGeneration"
    card = (final / "README.md").read_text()
    assert "## Metrics after each stage" in card and "| final (blind) |" in card
    summary = json.loads((tmp_path / "toy" / "evals" / "final" / "summary.json").read_text())
    assert set(summary) == {"vqa", "pope", "chair", "text", "text_ocr_hints", "probe"}
    assert set(summary["pope"]) == {"image", "blind"} and set(summary["probe"]) == {
        "shape",
        "color",
        "region",
        "size",
    }
    assert "descriptions (final)" in card and "descriptions (final_grpo)" not in card
    assert "| lm.0 |" in card and "Threads and CPUs" in card and "color @4+" in card
    assert "Relation sentences:" in card  # the toy CHAIR set checks them on each scene's layout
    assert "Quoted text:" in card  # ... and its quoted text on each scene's texts
    assert re.search(
        r"Connector: an MLP projector over AnyRes views .*, \d+ visual tokens per toy-world image", card
    )
    config = (tmp_path / "toy" / "configs" / "sft.yaml").read_text()
    assert "learning_rate: 0.001" in config  # --set reached the stage's YAML
    rows = ablations.table([tmp_path / "toy"], ["stage2", "final"]).splitlines()
    assert len(rows) == 4 and rows[3].startswith("| toy | final |")
    assert sum(p.stat().st_size for p in final.glob("*.safetensors")) < 25e6
    # a second run finds every stage and eval complete, and the card keeps the times of the first
    timings = json.loads((tmp_path / "toy" / "timings.json").read_text())
    assert {"data", "stage0_after_data", "stage1", "stage2", "stage3", "eval_final"} <= set(timings)
    threads = json.loads((tmp_path / "toy" / "threads.json").read_text())
    assert set(threads) == set(timings) and all(n >= 1 for n in threads.values())
    assert '"torch threads by step"' in card
    again = recipe.main(work)
    assert again == final
    assert json.loads((tmp_path / "toy" / "timings.json").read_text()) == timings
    assert f'"stage2": {timings["stage2"]}' in (final / "README.md").read_text()


def test_smoke_recipe_with_two_focus_stages_starts_dpo_from_its_refreshed_model(tmp_path):
    work = tmp_path / "toy"
    final = recipe.main(
        [
            "--workdir",
            str(work),
            "--smoke",
            "--no-install",
            "--focus_task",
            "color_all:2,keyed_detail",
            "--refresh_task",
            "instruct_train",
            "--set",
            "sft_focus.num_train_epochs=7",
            "--set",
            "stage2b2.learning_rate=5e-4",  # one focus stage's own setting
            "--focus_check",
            "stage2b2=color:0.9",  # run until held-out colour questions score 0.9
        ]
    )
    tasks = {
        name: json.loads((work / "data" / name / "manifest.json").read_text())["task"]
        for name in ("focus", "focus2", "refresh")
    }
    assert tasks == {"focus": "color_all", "focus2": "keyed_detail", "refresh": "instruct_train"}
    assert "ocr_hints" in json.loads(
        (work / "data" / "refresh" / "manifest.json").read_text()
    )  # hinted as stage 2
    for stage in ("stage2b", "stage2b2", "stage2c"):
        assert (work / stage / "model.safetensors").is_file()
        assert (work / "evals" / stage / "summary.json").is_file()
    configs = {
        n: yaml.safe_load((work / "configs" / f"{n}.yaml").read_text())
        for n in ("sft_focus", "stage2b2", "sft_refresh", "dpo")
    }
    assert configs["sft_focus"]["model_name_or_path"] == f"{work}/stage2"
    assert configs["sft_focus"]["dataset"] == f"{work}/data/focus"
    assert configs["sft_focus"]["num_train_epochs"] == 2  # TASK:EPOCHS wins over --set
    assert configs["stage2b2"]["model_name_or_path"] == f"{work}/stage2b"
    assert configs["stage2b2"]["dataset"] == f"{work}/data/focus2"
    assert configs["stage2b2"]["output_dir"] == f"{work}/stage2b2"
    assert configs["stage2b2"]["num_train_epochs"] == 7  # no epochs given: --set's
    assert configs["stage2b2"]["learning_rate"] == 5e-4 and configs["sft_focus"]["learning_rate"] != 5e-4
    assert configs["stage2b2"]["skill_check_data"] == f"{work}/data/check_color"
    assert (
        configs["stage2b2"]["skill_check_stop_at"] == 0.9 and "skill_check_data" not in configs["sft_focus"]
    )
    check = json.loads((work / "data" / "check_color" / "manifest.json").read_text())
    assert check["task"] == "color" and check["seed"] == recipe.check_seed(0, "color")
    scores = [json.loads(line) for line in (work / "stage2b2" / "skill_check.jsonl").read_text().splitlines()]
    assert [s["step"] for s in scores] == [3]  # the smoke stage's 3 steps, checked at its end
    assert configs["sft_refresh"]["model_name_or_path"] == f"{work}/stage2b2"
    assert configs["sft_refresh"]["dataset"] == f"{work}/data/refresh"
    assert configs["dpo"]["model_name_or_path"] == str(
        work / "stage2c"
    )  # preference tuning starts after the focus
    assert "| stage2c |" in (final / "README.md").read_text()

    # a later run continues from that model: no stages 0-2, its focus stages numbered on from the earlier run's
    later = tmp_path / "later"
    continued = recipe.main(
        [
            *("--workdir", str(later), "--smoke", "--no-install", "--continue_from", str(final)),
            *("--focus_task", "position_all", "--refresh_task", "instruct_varied_pos", "--ship", "sft"),
        ]
    )
    # --ship sft: the last supervised stage (2c), in float16, scored in full, carries the card
    assert continued == later / "final_sft"
    refreshed, exported = (
        load_file(later / "stage2c" / "model.safetensors"),
        load_file(continued / "model.safetensors"),
    )
    assert refreshed.keys() == exported.keys() and all(v.dtype == torch.float16 for v in exported.values())
    assert all(torch.equal(refreshed[k].half(), exported[k]) for k in refreshed)
    assert (later / "evals" / "final_sft" / "chair").is_dir() and "| final_sft |" in (
        continued / "README.md"
    ).read_text()
    assert not any((later / name).exists() for name in ("stage0", "stage1", "stage2", "data/caption"))
    assert not any(
        (later / name).exists() for name in ("stage3", "final", "data/preference", "evals/final")
    )  # --ship sft runs no DPO
    # its eval sets are the earlier run's, copied; its refresh task is another, built anew
    pope = json.loads((later / "data" / "eval_pope" / "manifest.json").read_text())
    assert pope["copied_from"] == str(work / "data" / "eval_pope")
    assert (later / "data" / "eval_pope" / "pope.jsonl").read_bytes() == (
        work / "data" / "eval_pope" / "pope.jsonl"
    ).read_bytes()
    assert "copied_from" not in json.loads((later / "data" / "refresh" / "manifest.json").read_text())
    focus3 = json.loads((later / "data" / "focus3" / "manifest.json").read_text())
    assert (
        focus3["task"] == "position_all" and focus3["seed"] == 64_000_000
    )  # focus, focus2 were the earlier run's
    stage2b3 = yaml.safe_load((later / "configs" / "stage2b3.yaml").read_text())
    assert stage2b3["model_name_or_path"] == str(final) and stage2b3["dataset"] == f"{later}/data/focus3"
    assert yaml.safe_load((later / "configs" / "sft_refresh.yaml").read_text())["model_name_or_path"] == str(
        later / "stage2b3"
    )
    before = load_file(final / "model.safetensors")
    after = load_file(later / "stage2b3" / "model.safetensors")
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before)  # it trained
    card = (continued / "README.md").read_text()
    first = json.loads((work / "build_seconds.json").read_text())["seconds"]
    assert f'"earlier runs (to {work})": {first}' in card and '"stage2b3": ' in card
    later_built = json.loads((later / "build_seconds.json").read_text())
    assert later_built["seconds"] > first  # a third run's card counts both before it
    # the build in stage-2 units: stage 2 is the earlier run's, the one piece of work every build repeats
    stage2 = json.loads((work / "timings.json").read_text())["stage2"]
    assert json.loads((work / "build_seconds.json").read_text())["stage2_seconds"] == stage2
    assert later_built["stage2_seconds"] == stage2
    assert later_built["stage2_units"] == round(later_built["seconds"] / stage2, 2)
    assert f"{later_built['stage2_units']} stage-2 units" in card
    assert "Stage-0 encoder probe (frozen features" in card  # the earlier run's stage 0
    assert "this run continued from" in model_card.stage0_line(None, {"continue_from": "elsewhere/final"})
    with pytest.raises(ValueError, match="add --focus_task"):
        recipe.RecipeArgs(continue_from=str(final))
    with pytest.raises(ValueError, match="skips DPO and GRPO"):
        recipe.RecipeArgs(ship="sft", grpo=True)
    with pytest.raises(ValueError, match="no model there"):
        recipe.RecipeArgs(continue_from=str(tmp_path), focus_task="color_all")


def test_stage_0_beside_a_data_step_that_fails_is_stopped_with_it(tmp_path):
    job = recipe.Stage0Job(recipe.stage0_config(tmp_path, 0, True))
    with pytest.raises(KeyError, match="the data step failed"), job:
        raise KeyError("the data step failed")
    assert not job.process.is_alive() and job.process.exitcode != 0
    assert not (tmp_path / "stage0" / "stage0_report.json").is_file()


def test_smoke_recipe_without_stage_2_starts_its_focus_phase_from_stage_1(tmp_path):
    work = tmp_path / "toy"
    final = recipe.main(
        [
            *("--workdir", str(work), "--smoke", "--no-install", "--skip_stage2", "--ship", "sft"),
            *("--focus_task", "color_all", "--refresh_task", "instruct_many_compare3"),
        ]
    )
    assert final == work / "final_sft"
    assert not any((work / name).exists() for name in ("stage2", "data/instruct", "evals/stage2"))
    focus = yaml.safe_load((work / "configs" / "sft_focus.yaml").read_text())
    assert focus["model_name_or_path"] == f"{work}/stage1"
    before, after = (
        load_file(work / "stage1" / "model.safetensors"),
        load_file(work / "stage2b" / "model.safetensors"),
    )
    assert any(
        not torch.equal(before[k], after[k]) for k in before
    )  # the focus stage trained stage 1's model
    assert "ocr_hints" in json.loads((work / "data" / "refresh" / "manifest.json").read_text())
    built = json.loads((work / "build_seconds.json").read_text())
    assert built["seconds"] > 0 and "stage2_units" not in built  # no stage 2 to measure the build by
    assert "| stage2c |" in (final / "README.md").read_text()
    with pytest.raises(ValueError, match="add --focus_task and --refresh_task"):
        recipe.RecipeArgs(skip_stage2=True, focus_task="color_all")


@pytest.mark.slow  # test time: the GRPO stage, its merge and evals on top of the smoke recipe above
def test_smoke_recipe_with_grpo_ships_the_grpo_model_beside_dpo(tmp_path):
    work = ["--workdir", str(tmp_path / "toy"), "--smoke", "--no-install", "--grpo", "--ship", "grpo"]
    final = recipe.main(work)
    assert final.name == "final_grpo"  # stage 3b ran beside DPO and carries the card
    card = (final / "README.md").read_text()
    summary = json.loads((tmp_path / "toy" / "evals" / "final" / "summary.json").read_text())
    grpo_summary = json.loads((tmp_path / "toy" / "evals" / "final_grpo" / "summary.json").read_text())
    assert set(grpo_summary) == set(summary)
    assert "descriptions (final)" in card and "descriptions (final_grpo)" in card
    grpo_config = (tmp_path / "toy" / "configs" / "grpo.yaml").read_text()
    assert f"anchor_dataset: {tmp_path / 'toy'}/data/anchor" in grpo_config  # the recipe wrote the anchor set
    assert recipe.main(work) == final


def test_anchor_set_keeps_the_conversations_that_never_describe_their_image(tmp_path):
    from assistant.toyworld import make_dataset
    from training.data import load_sft_dataset

    instruct = make_dataset(tmp_path / "instruct", task="instruct", n=60, seed=20_000_000)
    anchor = recipe.write_anchor(instruct, tmp_path / "anchor")
    qa = [json.loads(line) for line in (instruct / "qa.jsonl").read_text().splitlines()]
    described = {q["image"] for q in qa if q["task"] == "detail"}
    rows = [json.loads(line) for line in (anchor / "messages.jsonl").read_text().splitlines()]
    total = len((instruct / "messages.jsonl").read_text().splitlines())
    assert described and 0 < len(rows) == total - len(described)
    assert not described.intersection(img for row in rows for img in row["images"])
    dataset, report = load_sft_dataset(anchor)  # the images resolve through the link into instruct
    assert len(dataset) == len(rows) and report.skipped == 0
    written = (anchor / "messages.jsonl").stat().st_mtime_ns
    assert recipe.write_anchor(instruct, anchor) == anchor  # written once
    assert (anchor / "messages.jsonl").stat().st_mtime_ns == written
    refresh = make_dataset(tmp_path / "refresh", task="instruct_varied", n=30, seed=70_000_000)
    recipe.write_anchor(refresh, anchor)  # another source (stage 2c's data after a focus phase): rewritten
    assert json.loads((anchor / "manifest.json").read_text())["source"] == str(refresh)
    assert (
        len(load_sft_dataset(anchor)[0]) < 30
        and (anchor / "images").resolve() == (refresh / "images").resolve()
    )


@pytest.mark.slow  # test time: a second smoke recipe
def test_smoke_recipe_with_the_qformer_pretrains_its_queries_in_stage_0(tmp_path):
    work = tmp_path / "toy_qformer"
    final = recipe.main(["--workdir", str(work), "--smoke", "--connector", "qformer"])  # not installed
    model = AutoModelForImageTextToText.from_pretrained(final)
    assert type(model).__name__ == "Blip2ForConditionalGeneration"
    slots = json.loads((work / "stage0" / "qformer" / "qformer_report.json").read_text())
    assert slots["args"]["tower"] == str(work / "stage0" / "vision_blip2")
    stage1 = (work / "configs" / "pretrain_qformer.yaml").read_text()
    assert f"qformer_init: {work}/stage0/qformer" in stage1 and f"vision: {work}/stage0/qformer" in stage1
    card = (final / "README.md").read_text()
    assert "pretrained in stage 0 as object slots" in card
    tokens = AutoConfig.from_pretrained(final).num_query_tokens
    assert f"Connector: a Q-Former, {tokens} query tokens per image" in card


def test_recipe_refuses_a_malformed_override():
    with pytest.raises(ValueError, match="write CONFIG.KEY=VALUE"):
        recipe.RecipeArgs(set=["sft.learning_rate"])
    with pytest.raises(ValueError, match="no configs/toy/nope.yaml"):
        recipe.RecipeArgs(set=["nope.x=1"])
    with pytest.raises(ValueError, match=r"nor a focus stage of this run.*\(stage2b, stage2b2\)"):
        recipe.RecipeArgs(focus_task="color_all:3,keyed", set=["stage2b3.learning_rate=1e-3"])
    assert recipe.RecipeArgs(
        focus_task="color_all:3,keyed", set=["stage2b2.learning_rate=1e-3"]
    ).stage_overrides() == {"stage2b2": {"learning_rate": 1e-3}}
    with pytest.raises(ValueError, match="not a focus stage of this run"):
        recipe.RecipeArgs(focus_task="color_all:3", focus_check="stage2b2=color:0.8")
    with pytest.raises(ValueError, match="STAGE=TASK:STOP_AT"):
        recipe.RecipeArgs(focus_task="color_all:3", focus_check="stage2b=color:80")
    with pytest.raises(ValueError, match="not a toy-world question task"):
        recipe.RecipeArgs(focus_task="color_all:3", focus_check="stage2b=pope:0.8")
    assert recipe.RecipeArgs(focus_task="color_all:3", focus_check="stage2b=color:0.75").focus_checks() == {
        "stage2b": ("color", 0.75)
    }
    with pytest.raises(ValueError, match="focus_task must be a toy-world conversation task"):
        recipe.RecipeArgs(focus_task="pope")  # a POPE set is not training conversations
    with pytest.raises(ValueError, match="focus_task must be a toy-world conversation task"):
        recipe.RecipeArgs(focus_task="color_all:3,pope:1")
    for bad in ("color_all:0", "color_all:2:0", "color_all::100", "color_all:2:100:1"):
        with pytest.raises(ValueError, match="TASK:EPOCHS:SCENES with EPOCHS, SCENES >= 1"):
            recipe.RecipeArgs(focus_task=bad)
    with pytest.raises(ValueError, match="at most 2,000,000 scenes"):
        recipe.RecipeArgs(focus_task="color_by_size:2:2000001")
    assert recipe.RecipeArgs(focus_task="color_all:4, keyed, color_by_size:2:30000").focus_stages() == [
        ("color_all", 4, None),
        ("keyed", None, None),
        ("color_by_size", 2, 30000),
    ]
    with pytest.raises(ValueError, match="runs only with --focus_task"):
        recipe.RecipeArgs(refresh_task="instruct_train")


def test_focus_stages_number_on_from_the_run_continued_and_never_share_stage_2cs_scenes(tmp_path):
    # a run that itself continued another has only its own, later focus data (runs/WB: data/focus5 alone)
    for name in ("focus5", "focus6"):
        (tmp_path / "earlier" / "data" / name).mkdir(parents=True)
        (tmp_path / "earlier" / "data" / name / "manifest.json").write_text("{}")
    (tmp_path / "earlier" / "final").mkdir()
    (tmp_path / "earlier" / "final" / "config.json").write_text("{}")
    args = recipe.RecipeArgs(continue_from=str(tmp_path / "earlier" / "final"), focus_task="position_detail")
    assert args.first_focus() == 6
    assert recipe.RecipeArgs(focus_task="color_all").first_focus() == 0
    n = recipe.RecipeArgs().n_focus
    refresh = range(70_000_000, 70_000_000 + recipe.RecipeArgs().n_refresh)
    starts = [recipe.focus_seed(0, i) for i in range(recipe.MAX_FOCUS)]
    assert starts[:5] == [
        60_000_000 + 2_000_000 * i for i in range(5)
    ]  # the shipped model's data is unchanged
    for i, start in enumerate(starts):
        assert start >= 60_000_000 and not set(range(start, start + n)) & set(refresh)
        assert all(start + n <= later for later in starts[i + 1 :])
    with pytest.raises(ValueError, match="at most"):
        recipe.focus_seed(0, recipe.MAX_FOCUS)


def _data_only_args(workdir, **given) -> recipe.RecipeArgs:
    """A recipe whose data step makes tiny sets in `workdir` (no OCR hints), for tests of `make_data` alone."""
    sizes = dict(n_caption=2, n_instruct=2, n_eval=2, n_focus=3, ocr_hint_share=0.0, ship="sft")
    return recipe.RecipeArgs(workdir=str(workdir), **{**sizes, **given})


def test_a_focus_stage_given_its_scenes_gets_that_many_and_the_others_n_focus(tmp_path):
    args = _data_only_args(tmp_path, focus_task="color_by_size:1:24,color:1")
    data = recipe.make_data(args, tmp_path)
    sizes = {name: json.loads((data[name] / "manifest.json").read_text()) for name in ("focus", "focus2")}
    assert sizes["focus"]["n"] == 24 and sizes["focus"]["seeds"] == [60_000_000, 60_000_023]
    assert sizes["focus2"]["n"] == 3
    assert 0 < sizes["focus"]["images"] < 24  # by size: only the scenes with a sized pair have an image


def test_check_sets_of_every_task_are_apart_and_fixed_by_the_task_name_alone():
    from itertools import pairwise

    from assistant.toyworld import TASKS

    starts = sorted(recipe.check_seed(0, name) for name in TASKS)
    assert all(b - a >= recipe.CHECK_SCENES for a, b in pairwise(starts))  # no two checks share a scene
    assert starts[0] >= 500_000  # clear of the benchmarks' sets at seed + 0 .. + 300,000 (and their n)
    assert recipe.check_seed(0, "color") == 500_000 + 30_793 * 10_000  # as it was when this test was written
    assert recipe.check_seed(7, "color") == recipe.check_seed(0, "color") + 7


def test_a_set_made_under_other_options_stops_the_run_with_its_path_and_the_difference(tmp_path):
    args = _data_only_args(tmp_path, focus_task="color:1", refresh_task="instruct", n_refresh=3)
    first = recipe.make_data(args, tmp_path)
    assert recipe.make_data(args, tmp_path) == first  # the same options again: every set reused
    made = (first["refresh"] / "manifest.json").read_text()
    args.refresh_task = "instruct_varied"
    with pytest.raises(ValueError, match=r"refresh.*task 'instruct' where this run plans 'instruct_varied'"):
        recipe.make_data(args, tmp_path)
    assert (first["refresh"] / "manifest.json").read_text() == made  # nothing of the old set was touched


def test_a_set_is_reused_only_when_task_seeds_and_hints_match(tmp_path):
    from assistant.toyworld import make_dataset

    data = tmp_path / "data"
    make_dataset(data / "refresh", task="instruct", n=4, seed=70_000_000)
    want = {"task": "instruct", "n": 4, "seed": 70_000_000, "eval": False}
    assert recipe.built_before(data, want, None) == data / "refresh"
    assert recipe.built_before(data, {**want, "seed": 70_000_001}, None) is None
    assert recipe.built_before(data, {**want, "task": "instruct_varied"}, None) is None
    assert recipe.built_before(data, {**want, "eval": True}, None) is None
    manifest = json.loads((data / "refresh" / "manifest.json").read_text())
    hinted = {
        **manifest,
        "ocr_hints": {"share": 0.5, "seed": 0, "eligible": 1, "hinted": 1, "empty_reads": 0},
    }
    (data / "refresh" / "manifest.json").write_text(json.dumps(hinted))
    assert recipe.built_before(data, want, (0.5, 0)) == data / "refresh"  # the hints this run would add
    assert recipe.built_before(data, want, (0.3, 0)) is None  # other hints: built anew
    assert recipe.built_before(data, want, None) is None  # a set that takes no hints


def test_smoke_recipe_in_two_processes_trains_each_stage_data_parallel(tmp_path):
    work = tmp_path / "toy"
    final = recipe.main(
        [
            *("--workdir", str(work), "--smoke", "--no-install", "--skip_stage2", "--ship", "sft"),
            *("--focus_task", "color_all", "--refresh_task", "instruct_many_compare3", "--processes", "2"),
            *("--focus_check", "stage2b=color:0.99"),
        ]
    )
    threads = json.loads((work / "threads.json").read_text())
    assert {threads[s] for s in ("stage1", "stage2b", "stage2c")} == {"2x1"}  # two processes of one thread
    for name in ("pretrain", "sft_focus", "sft_refresh"):  # each process half of the smoke batch of 4
        config = yaml.safe_load((work / "configs" / f"{name}.yaml").read_text())
        assert config["per_device_train_batch_size"] == 2
    checks = [json.loads(line) for line in (work / "stage2b" / "skill_check.jsonl").open()]
    assert [c["step"] for c in checks] == [3]  # recorded once, by one process
    before, after = (load_file(work / s / "model.safetensors") for s in ("stage1", "stage2b"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    state = json.loads((work / "stage2c" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["log_history"][-1]["train_loss"] > 0
    assert (final / "README.md").is_file() and (work / "evals" / "final_sft").is_dir()


def test_a_batch_that_does_not_split_over_the_processes_stops_before_any_launch(tmp_path):
    with pytest.raises(recipe.ConfigError, match="does not split over 3 processes"):
        recipe.launch_stage("sft", "sft_focus", tmp_path, 3, "", {"per_device_train_batch_size": 8})
    assert not (tmp_path / "configs").exists()
    with pytest.raises(ValueError, match="processes must be >= 1"):
        recipe.RecipeArgs(processes=0)
