"""Training fixtures: small toy-world datasets and a tiny model that can learn from them in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    from assistant.toyworld import make_dataset

    root = tmp_path_factory.mktemp("toydata")
    return {
        task: make_dataset(root / task, task=task, n=n, seed=seed)
        for task, n, seed in [("caption", 16, 10), ("instruct", 16, 40), ("preference", 12, 70)]
    }


def train_config(cls, out: Path, **overrides):
    """A CPU config for a few real optimisation steps."""
    base = dict(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        max_length=None,
        per_device_train_batch_size=4,
        max_steps=6,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_steps=100,
        report_to=[],
        seed=0,
        disable_tqdm=True,
    )
    if cls.__name__ == "SFTConfig":
        base["assistant_only_loss"] = True
    if "max_length" not in cls.__dataclass_fields__:  # GRPO: prompts are never truncated, only completions
        del base["max_length"]
    return cls(**{**base, **overrides})
