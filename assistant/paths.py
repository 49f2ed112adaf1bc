"""Where the embedded default model lives, and telling a local path that is missing from a hub id."""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
DEFAULT_MODEL_NAME = "default"  # every --model / --model_name_or_path accepts it for the embedded model

# A hub id is "name" or "namespace/name" of letters, digits, "-", "_" and "." (not starting with "." or "-").
_HUB_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)?$")
# The toy recipe's stage outputs and the command that makes each.
_MADE_BY = {
    "stage0": "python training/bootstrap.py --config configs/toy/bootstrap.yaml --out runs/toy/stage0",
    "stage1": "accelerate launch training/pretrain.py --config configs/toy/pretrain.yaml",
    "stage2": "accelerate launch training/sft.py --config configs/toy/sft.yaml",
    "stage3": "accelerate launch training/dpo.py --config configs/toy/dpo.yaml",
}


def looks_local(source: str) -> bool:
    """True when `source` can only mean a path: it is not of the hub's `namespace/name` form."""
    return source.startswith((".", "/", "~")) or "\\" in source or not _HUB_ID.match(source)


def missing_path_message(source: str, what: str = "model directory") -> str:
    """One line naming the missing path and, for the toy recipe's stages, the command that makes it."""
    hint = next((cmd for stage, cmd in _MADE_BY.items() if stage in Path(source).parts), None)
    if hint:
        return (
            f"{what} {source!r} does not exist yet; make it first with `{hint}` (or `make toy-model` for all)"
        )
    return f"{what} {source!r} does not exist; check the path (a hub id has the form namespace/name)"


def resolve_model_source(source: str | None) -> str:
    """`default` (or nothing) -> the embedded model's directory; a path that looks local must exist."""
    if source in (None, "", DEFAULT_MODEL_NAME):
        return str(DEFAULT_MODEL_DIR)
    if not Path(source).expanduser().exists() and looks_local(source):
        from assistant.errors import ConfigError

        raise ConfigError(missing_path_message(source))
    return source
