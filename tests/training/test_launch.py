"""Every shipped config loads against the script that reads it; the scripts run under `accelerate launch` and as
plain `python`, with YAML and command-line overrides."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trl import DPOConfig, GRPOConfig, ModelConfig, SFTConfig, TrlParser

from training.bootstrap import BootstrapArgs
from training.dpo import DPOScriptArgs
from training.grpo import GRPOScriptArgs
from training.pretrain import PretrainScriptArgs
from training.sft import SFTScriptArgs
from training.stage0.config import LanguageArgs, ProbeArgs, VisionArgs

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "pretrain": (PretrainScriptArgs, SFTConfig, ModelConfig),
    "hub/clip_qwen_pretrain": (PretrainScriptArgs, SFTConfig, ModelConfig),
    "sft": (SFTScriptArgs, SFTConfig, ModelConfig),
    "sft_lora": (SFTScriptArgs, SFTConfig, ModelConfig),
    "sft_qlora": (SFTScriptArgs, SFTConfig, ModelConfig),
    "sft_focus": (SFTScriptArgs, SFTConfig, ModelConfig),
    "sft_refresh": (SFTScriptArgs, SFTConfig, ModelConfig),
    "dpo": (DPOScriptArgs, DPOConfig, ModelConfig),
    "grpo": (GRPOScriptArgs, GRPOConfig, ModelConfig),
    "pretrain_qformer": (PretrainScriptArgs, SFTConfig, ModelConfig),
    "sft_qformer": (SFTScriptArgs, SFTConfig, ModelConfig),
    "dpo_qformer": (DPOScriptArgs, DPOConfig, ModelConfig),
}


def test_every_toy_stage_config_is_checked_here():
    stages = {p.stem for p in (ROOT / "configs" / "toy").glob("*.yaml")} - {"bootstrap"}  # test_bootstrap's
    assert stages <= set(SCRIPTS), stages - set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_shipped_toy_configs_parse(name):
    script, train, model = TrlParser(SCRIPTS[name]).parse_args_and_config(
        # GPU configs ask for bf16, which this CPU machine refuses: parse them with it switched off
        args=["--config", str(ROOT / "configs" / ("" if "/" in name else "toy") / f"{name}.yaml")]
        + (["--bf16", "false"] if "/" in name else [])
    )
    assert train.output_dir.startswith("runs/")
    assert getattr(train, "max_length", None) is None  # image tokens are never truncated
    assert model.use_peft == (name in ("sft_lora", "sft_qlora", "dpo", "grpo", "dpo_qformer"))
    assert (
        getattr(script, "vision", None)
        in (
            None,
            "runs/toy/stage0/vision",
            "runs/toy_qformer/stage0/qformer",  # the tower the slot-pretrained queries read (training/stage0/qformer.py)
            "openai/clip-vit-large-patch14-336",
        )
    )
    assert getattr(script, "connector", "qformer" if "qformer" in name else "mlp2x_gelu") == (
        "qformer" if "qformer" in name else "mlp2x_gelu"
    )


@pytest.mark.parametrize(
    "parsers",
    [
        *dict.fromkeys(SCRIPTS.values()),  # each script's parsers once
        (BootstrapArgs, VisionArgs, LanguageArgs, ProbeArgs),  # training/bootstrap.py
    ],
    ids=lambda parsers: parsers[0].__name__,
)
def test_every_launch_script_prints_its_help(parsers):
    """`python training/X.py --help` renders every option's help (argparse %-formats it: a bare "80%" once crashed
    stage 0's with a TypeError)."""
    text = TrlParser(parsers).format_help()
    own = [f.name for f in dataclasses.fields(parsers[0])]  # the script's own options, listed with the rest
    assert own and all(f"--{name} " in text for name in own)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem
)
def test_accelerate_configs_are_valid(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1


def _write_config(tmp_path: Path, tiny_model_dir: Path, data: Path) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "toy" / "sft.yaml").read_text())
    config.update(
        model_name_or_path=str(tiny_model_dir),
        dataset=str(data),
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        max_samples=4,
        max_steps=2,
        report_to=["tensorboard"],
        logging_steps=1,
    )
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    # slow: test time; the accelerate launch runs the same script, and the recipe runs the stages in-process
    "launcher",
    [pytest.param("python", marks=pytest.mark.slow), "accelerate"],
)
def test_sft_runs_from_the_command_line(tmp_path, tiny_model_dir, toy_data, launcher):
    config = _write_config(tmp_path, tiny_model_dir, toy_data["instruct"])
    prefix = (
        [sys.executable]
        if launcher == "python"
        else [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "configs/accelerate/cpu.yaml"),
        ]
    )
    cmd = [*prefix, str(ROOT / "training" / "sft.py"), "--config", str(config), "--learning_rate", "1e-3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert any(
        h.get("learning_rate") == pytest.approx(1e-3, rel=0.5) for h in state["log_history"]
    )  # override won
    assert list((tmp_path / "out" / "runs").rglob("events.out.tfevents.*"))  # TensorBoard logs
    assert ": stage 2 done: " in out.stderr  # the script's own log lines reach the user


@pytest.mark.slow
def test_two_cpu_processes_with_gloo(tmp_path, tiny_model_dir, toy_data):
    config = _write_config(tmp_path, tiny_model_dir, toy_data["instruct"])
    settings = yaml.safe_load(config.read_text())
    settings.update(max_steps=-1, num_train_epochs=1, max_samples=8)  # 8 rows, 2 a process: 2 steps, not 4
    config.write_text(yaml.safe_dump(settings))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "configs/accelerate/cpu_ddp2.yaml"),
        str(ROOT / "training" / "sft.py"), "--config", str(config), "--ddp_find_unused_parameters", "true",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    # session 53: a MULTI_CPU config launched one process, which trained alone on every row (4 steps)
    assert out.stderr.count(": stage 2 done: ") == 2  # each process finished
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == 2
    assert (tmp_path / "out" / "model.safetensors").is_file()
