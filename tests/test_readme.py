"""The README cannot drift from the code: every shell block is marked `run` or `skip (why)`, and the `run` blocks
execute in order, as written, in a fresh clone of this repository (with this checkout's .venv)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- readme: (?P<marker>[^>]*?) -->\n)?```bash\n(?P<body>.*?)```", re.S)


def shell_blocks(text: str) -> list[tuple[str | None, str]]:
    """(marker or None, body) of every ```bash block, in order."""
    return [(m.group("marker"), m.group("body")) for m in BLOCK.finditer(text)]


def test_every_shell_block_says_whether_it_runs():
    blocks = shell_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 10
    for marker, body in blocks:
        assert marker == "run" or (marker or "").startswith("skip ("), (
            f"mark this README block <!-- readme: run --> or <!-- readme: skip (why) -->:\n{body}"
        )


@pytest.mark.slow
def test_readme_blocks_run_as_written_in_a_fresh_clone(tmp_path):
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(Path(sys.prefix))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ran = 0
    for marker, body in shell_blocks((clone / "README.md").read_text()):
        if marker != "run":
            continue
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert out.returncode == 0, f"README block failed:\n{body}\n--- stderr ---\n{out.stderr[-3000:]}"
        ran += 1
    assert ran >= 4
    assert (clone / "runs" / "mine" / "config.json").is_file()  # the fine-tuned model
    assert (clone / "reports" / "vqa" / "report.json").is_file() and (
        clone / "reports" / "probe" / "probe.json"
    ).is_file()
