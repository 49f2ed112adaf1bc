"""The toy recipe end to end in smoke mode: every step runs and the model card is written from real reports."""

from __future__ import annotations

import json

from transformers import AutoModelForImageTextToText

from training import recipe


def test_smoke_recipe_builds_a_loadable_model_with_a_model_card(tmp_path):
    final = recipe.main(["--workdir", str(tmp_path / "toy"), "--smoke", "--no-install"])
    model = AutoModelForImageTextToText.from_pretrained(final)
    assert type(model).__name__ == "LlavaNextForConditionalGeneration"
    card = (final / "README.md").read_text()
    assert "## Metrics after each stage" in card and "| final (blind) |" in card
    summary = json.loads((tmp_path / "toy" / "evals" / "final" / "summary.json").read_text())
    assert set(summary) == {"vqa", "pope", "chair"} and set(summary["pope"]) == {"image", "blind"}
    assert sum(p.stat().st_size for p in final.glob("*.safetensors")) < 25e6
    # a second run finds every stage complete and only re-evaluates
    again = recipe.main(["--workdir", str(tmp_path / "toy"), "--smoke", "--no-install"])
    assert again == final
