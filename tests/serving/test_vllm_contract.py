"""The vllm engine's contract with the vLLM release the project names, read from that release's wheel.

The source check is slow-marked and needs the wheel (vLLM cannot be installed here, but its wheel can be read):
    pip download vllm==0.30.0 --no-deps -d /tmp/vllm_whl     # or set VLLM_WHEEL_DIR
    python -m pytest -m slow tests/serving/test_vllm_contract.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from serving.engines.vllm_contract import VLLM_VERSION
from serving.engines.vllm_contract.checks import ENGINE, Report, check_engine, check_model_dir, run_checks
from serving.engines.vllm_contract.source import VLLMSource

ROOT = Path(__file__).resolve().parents[2]
WHEEL_DIR = Path(os.environ.get("VLLM_WHEEL_DIR", "/tmp/vllm_whl"))


def test_the_gpu_extra_and_compose_name_the_checked_release():
    gpu = re.search(r"^gpu = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert gpu is not None, "pyproject.toml has no one-line `gpu` extra"
    assert [d for d in json.loads(f"[{gpu.group(1)}]") if d.startswith("vllm")] == [f"vllm=={VLLM_VERSION}"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    vllm = compose["services"]["vllm"]
    assert vllm["image"] == f"vllm/vllm-openai:v{VLLM_VERSION}"
    # the model's own context unless MAX_MODEL_LEN is set; the embedded model by default; a hub model by MODEL
    assert "$${MAX_MODEL_LEN:+--max-model-len" in vllm["command"][0]
    assert vllm["environment"]["MAX_MODEL_LEN"] == "${MAX_MODEL_LEN:-}"
    assert vllm["volumes"][0].startswith("${MODEL_DIR:-./assistant/default_model}:/models/served")
    assert vllm["environment"]["MODEL"] == "${MODEL:-/models/served}"


@pytest.fixture(scope="module")
def source() -> VLLMSource:
    if not any(WHEEL_DIR.glob(f"vllm-{VLLM_VERSION}-*.whl")):
        pytest.skip(
            f"vLLM {VLLM_VERSION}'s wheel is not in {WHEEL_DIR}: fetch it with "
            f"`pip download vllm=={VLLM_VERSION} --no-deps -d {WHEEL_DIR}` (or set VLLM_WHEEL_DIR)"
        )
    return VLLMSource.open(WHEEL_DIR, VLLM_VERSION)


@pytest.mark.slow
def test_the_engine_stand_in_and_saved_model_match_the_release(source, tiny_model_dir):
    report = run_checks(source, tiny_model_dir)
    assert not report.failures, "\n".join(f"{f.check}: {f.detail}" for f in report.failures)
    checks = {f.check for f in report.findings}
    assert {"argument", "method", "member", "exception", "finish reasons", "stand-in", "config"} <= checks


@pytest.mark.slow
def test_the_check_catches_what_broke_the_first_run(source, tmp_path, tiny_model_dir):
    """The engine as it was (`get_model_config()`), a SamplingParams field vLLM lacks, a config field dropped."""
    broken = ENGINE.read_text()
    broken = broken.replace(
        "self.engine.model_config.max_model_len", "(await self.engine.get_model_config()).x"
    )
    broken = re.sub(
        r"min_tokens=params\.min_tokens,", "min_tokens=params.min_tokens, min_new_tokens=1,", broken
    )
    engine = tmp_path / "vllm_engine.py"
    engine.write_text(broken)
    report = Report(VLLM_VERSION)
    check_engine(source, report, engine)
    failed = {f.detail.split(" ")[0] for f in report.failures}
    assert "self.engine.get_model_config" in failed
    assert "SamplingParams(min_new_tokens=...)" in failed

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    del config["image_grid_pinpoints"]
    (model / "config.json").write_text(json.dumps(config))
    report = Report(VLLM_VERSION)
    check_model_dir(source, report, model)
    assert [f.detail for f in report.failures] == ["image_grid_pinpoints is not in config.json"]
