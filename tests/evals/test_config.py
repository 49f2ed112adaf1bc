"""Every shipped eval config loads into EvalArgs; bad values are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.cli import build_parser
from evals.config import BENCHMARK_NAMES, load_args

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "evals").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    args = load_args(path, {})
    assert args.data and args.blind  # model-card figures always carry the blind baseline


def test_cli_overrides_config_and_refusals(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: somewhere\nmax_tokens: 8\n")
    assert load_args(config, {"max_tokens": 4, "out": None}).max_tokens == 4
    config.write_text("data: somewhere\nmax_token: 8\n")
    with pytest.raises(ValueError, match="unknown eval arguments \\['max_token'\\]"):
        load_args(config, {})
    with pytest.raises(ValueError, match="concurrency must be positive"):
        load_args(None, {"data": "x", "concurrency": 0})
    with pytest.raises(ValueError, match="batch_size must be positive"):
        load_args(None, {"data": "x", "batch_size": 0})
    with pytest.raises(ValueError, match="unknown CHAIR vocabulary"):
        load_args(None, {"data": "x", "vocabulary": "imagenet"})


def test_eval_subcommands_are_registered():
    parser = build_parser()
    for name in BENCHMARK_NAMES:
        args = parser.parse_args(["eval", name, "--data", "d", "--blind", "--concurrency", "2"])
        assert args.benchmark == name and args.blind is True and args.concurrency == 2
