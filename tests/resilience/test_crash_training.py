"""Crash-safe training: a real `python training/sft.py` run on the tiny model is killed with SIGKILL at random
moments (some of them while a checkpoint is being written) and resumed each time. Every `checkpoint-N` left
behind loads and resumes, and the finished run has the same loss curve as one that was never killed; two runs
with the same seed give identical losses; 1% corrupt images are skipped and counted exactly."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForImageTextToText
from trl import ModelConfig, SFTConfig

from training import sft
from training.data import DataError, load_sft_dataset

ROOT = Path(__file__).resolve().parents[2]
STEPS, SAVE_STEPS = 12, 2


@pytest.fixture(scope="module")
def instruct_data(tmp_path_factory) -> Path:
    from assistant.toyworld import make_dataset

    return make_dataset(tmp_path_factory.mktemp("crashdata") / "instruct", task="instruct", n=24, seed=40)


def run_config(tiny_model_dir: Path, data: Path, out: Path) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "toy" / "sft.yaml").read_text())
    config.update(
        model_name_or_path=str(tiny_model_dir),
        dataset=str(data),
        output_dir=str(out),
        per_device_train_batch_size=2,
        max_steps=STEPS,
        save_steps=SAVE_STEPS,
        save_total_limit=None,
        logging_steps=1,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    return config


def losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def in_process_run(tiny_model_dir: Path, data: Path, out: Path) -> dict[int, float]:
    config = run_config(tiny_model_dir, data, out)
    script = sft.SFTScriptArgs(dataset=config.pop("dataset"), train_parts=config.pop("train_parts"))
    model_args = ModelConfig(model_name_or_path=config.pop("model_name_or_path"))
    sft.main(script, SFTConfig(**config), model_args)
    return losses(out)


def check_checkpoints(out: Path) -> list[int]:
    """Every checkpoint-N loads as a model and has a readable trainer state at step N; returns the steps."""
    steps = []
    for ckpt in sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        step = int(ckpt.name.split("-")[1])
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert state["global_step"] == step, ckpt
        assert (ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file(), ckpt
        AutoModelForImageTextToText.from_pretrained(ckpt)
        steps.append(step)
    return steps


def killed_and_resumed(tiny_model_dir: Path, data: Path, out: Path, kills: int, seed: int) -> dict:
    """Kill the run `kills` times (at random moments, every other one as soon as a checkpoint write starts),
    check the checkpoints after each kill, then let it finish; returns figures."""
    config_path = out.parent / f"{out.name}.yaml"
    config_path.write_text(yaml.safe_dump(run_config(tiny_model_dir, data, out)))
    cmd = [
        sys.executable,
        "training/sft.py",
        "--config",
        str(config_path),
        "--resume_from_checkpoint",
        "true",
    ]
    rng = random.Random(seed)
    figures = {"kills": 0, "kills_during_checkpoint_write": 0, "checkpoints_checked": 0, "runs": 0}
    while figures["kills"] < kills:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        figures["runs"] += 1
        during_write = figures["kills"] % 2 == 1
        deadline = time.monotonic() + rng.uniform(4.0, 14.0)  # start-up is a few seconds of imports
        while proc.poll() is None:
            staging = (out / ".staging").exists()
            if (during_write and staging) or (not during_write and time.monotonic() > deadline):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                figures["kills"] += 1
                figures["kills_during_checkpoint_write"] += int(staging)
                break
            time.sleep(0.002)
        figures["checkpoints_checked"] += len(check_checkpoints(out))
        if proc.returncode == 0:  # it finished before the kill: start over so the kill count is real
            for path in out.glob("checkpoint-*"):
                shutil.rmtree(path)
            (out / "trainer_state.json").unlink(missing_ok=True)
    final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    figures["final_checkpoints"] = check_checkpoints(out)
    return figures


def crash_run(tmp_path, tiny_model_dir, data, kills: int) -> None:
    straight = in_process_run(tiny_model_dir, data, tmp_path / "straight")
    again = in_process_run(tiny_model_dir, data, tmp_path / "again")
    assert straight == again and len(straight) == STEPS  # same seed, identical losses
    figures = killed_and_resumed(tiny_model_dir, data, tmp_path / "killed", kills, seed=kills)
    print(f"FIGURE crash-training {figures}")
    assert figures["final_checkpoints"] == list(range(SAVE_STEPS, STEPS + 1, SAVE_STEPS))
    resumed = losses(tmp_path / "killed")
    assert sorted(resumed) == sorted(straight)
    assert [resumed[s] for s in sorted(straight)] == pytest.approx(
        [straight[s] for s in sorted(straight)], rel=1e-4
    )


@pytest.mark.slow  # resume is tested in the default run (tests/training/test_stages.py); a real kill here
def test_training_survives_a_kill(tmp_path, tiny_model_dir, instruct_data):
    crash_run(tmp_path, tiny_model_dir, instruct_data, kills=1)  # 20 kills: the slow test below


@pytest.mark.slow
def test_training_survives_20_kills(tmp_path, tiny_model_dir, instruct_data):
    crash_run(tmp_path, tiny_model_dir, instruct_data, kills=20)


def test_one_percent_corrupt_images_are_skipped_and_counted(tmp_path):
    from assistant.toyworld import make_dataset

    data = make_dataset(tmp_path / "caption", task="caption", n=200, seed=5)
    _, clean = load_sft_dataset(data, max_skip_share=0.01)
    assert (clean.rows, clean.skipped) == (200, 0)
    truncated, empty = random.Random(0).sample(sorted(data.glob("images/*.png")), 2)  # 1% of 200
    truncated.write_bytes(truncated.read_bytes()[:100])
    empty.write_bytes(b"")
    dataset, report = load_sft_dataset(data, max_skip_share=0.01)
    assert (report.rows, report.skipped, report.kept, len(dataset)) == (200, 2, 198, 198)
    assert len(report.bad_images) == 2
    with pytest.raises(DataError, match="max_skip_share"):
        load_sft_dataset(data, max_skip_share=0.005)
