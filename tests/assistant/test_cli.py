"""The `assistant` console script, run as a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "assistant"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_the_subcommands(capsys):
    import pytest

    from assistant.cli import main  # in-process: the console script itself is run by the tests below

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("chat", "build"):
        assert command in out


def test_chat_answers_a_question_about_an_image(tiny_model_dir, red_image, tmp_path):
    image = tmp_path / "red.png"
    red_image.save(image)
    out = run(
        "chat", "--model", str(tiny_model_dir), "--image", str(image), "--max-tokens", "5", "what colour?"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()  # the tiny model is untrained: any non-empty answer


def test_user_errors_are_one_line_without_traceback(tiny_model_dir, tmp_path, capsys):
    """One case through the real console script, the rest through the same `main` in-process (each subprocess
    costs seconds of imports; what is under test is main's error handling, which is the same code)."""
    from assistant.cli import main

    not_image = tmp_path / "notes.png"
    not_image.write_text("this is text")
    cases = [
        (["chat", "--model", str(tmp_path / "missing"), "hi"], "missing' does not exist; check the path"),
        (
            ["chat", "--model", "nobody/no-such-model", "hi"],
            "could not read a model config from 'nobody/no-such",
        ),
        (["chat", "--model", str(tmp_path), "hi"], "has no config.json"),
        (["chat", "--model", str(tiny_model_dir), "--image", str(not_image), "hi"], "not a readable image"),
        (
            ["chat", "--model", str(tiny_model_dir), "--image", str(tmp_path / "none.png"), "hi"],
            "does not exist",
        ),
    ]
    out = run(*cases[0][0])
    assert out.returncode == 2, out.stderr
    assert cases[0][1] in out.stderr and "Traceback" not in out.stderr and out.stderr.count("error:") == 1
    for args, message in cases[1:]:
        capsys.readouterr()
        code = main(args)
        stderr = capsys.readouterr().err
        assert code == 2, (args, stderr)
        assert message in stderr
        assert "Traceback" not in stderr
        assert stderr.count("error:") == 1


@pytest.mark.parametrize(
    "connector",
    [
        [],
        pytest.param(  # slow: two more subprocesses; the Q-Former build itself is tested in-process
            ["--connector", "qformer", "--num-query-tokens", "4", "--qformer-image-size", "64"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_build_then_chat_from_local_directories(tmp_path, tiny_tokenizer, red_image, connector):
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from tests.conftest import TINY_VISION, tiny_language

    strip = lambda d: {k: v for k, v in d.items() if k != "model_type"}  # noqa: E731
    CLIPVisionModel(CLIPVisionConfig(**strip(TINY_VISION))).save_pretrained(tmp_path / "vision")
    LlamaForCausalLM(LlamaConfig(**strip(tiny_language(len(tiny_tokenizer))))).save_pretrained(
        tmp_path / "lm"
    )
    tiny_tokenizer.save_pretrained(tmp_path / "lm")
    out = run(
        "build",
        "--vision",
        str(tmp_path / "vision"),
        "--language",
        str(tmp_path / "lm"),
        "--out",
        str(tmp_path / "m"),
        *connector,
    )
    assert out.returncode == 0, out.stderr
    red_image.save(tmp_path / "red.png")
    out = run(
        "chat",
        "--model",
        str(tmp_path / "m"),
        "--image",
        str(tmp_path / "red.png"),
        "--max-tokens",
        "3",
        "hi",
    )
    assert out.returncode == 0, out.stderr
