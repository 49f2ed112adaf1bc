"""Telling a missing local path from a hub id, and the `default` model name."""

from __future__ import annotations

import pytest

from assistant.errors import ConfigError
from assistant.paths import DEFAULT_MODEL_DIR, looks_local, missing_path_message, resolve_model_source


@pytest.mark.parametrize(
    "name", ["runs/toy/stage1", "./model", "/abs/model", "~/m", "a/b/c", "models\\x", "x y"]
)
def test_paths_that_cannot_be_hub_ids_look_local(name):
    assert looks_local(name)


@pytest.mark.parametrize("name", ["gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "openai/clip-vit-large-patch14-336"])
def test_hub_ids_do_not(name):
    assert not looks_local(name)


def test_default_is_the_embedded_model_and_a_missing_path_is_one_line(tmp_path):
    assert resolve_model_source("default") == resolve_model_source(None) == str(DEFAULT_MODEL_DIR)
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)  # exists: taken as is
    assert (
        resolve_model_source("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    )  # the hub's to judge
    with pytest.raises(ConfigError, match="make it first with `python training/bootstrap.py") as err:
        resolve_model_source("runs/nowhere/stage0/language")
    assert "\n" not in str(err.value)
    assert "check the path" in missing_path_message("models/mine")
