"""Check the vllm engine against one vLLM release's source: see the package docstring.

python -m serving.engines.vllm_contract --wheel-dir /tmp/vllm_whl [--version 0.30.0] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from assistant.cli import resolve_model
from assistant.errors import ConfigError
from serving.engines.vllm_contract import VLLM_VERSION
from serving.engines.vllm_contract.checks import Report, run_checks
from serving.engines.vllm_contract.source import VLLMSource

log = logging.getLogger("serving.engines.vllm_contract")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the vllm engine against a vLLM release's source.")
    parser.add_argument(
        "--wheel-dir", required=True, help="Folder with the vLLM wheel, or an unpacked wheel."
    )
    parser.add_argument("--version", default=VLLM_VERSION, help="The vLLM release (default: the pinned one).")
    parser.add_argument(
        "--model-dir", default=None, help="A directory written by save_model (default: the embedded model)."
    )
    parser.add_argument("--verbose", action="store_true", help="List every check, not only failures.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        src = VLLMSource.open(args.wheel_dir, args.version)
        report = run_checks(src, Path(args.model_dir or resolve_model(None)))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    log_report(report, args.verbose)
    return 1 if report.failures else 0


def log_report(report: Report, verbose: bool = False) -> None:
    counts: dict[str, list[int]] = {}
    for finding in report.findings:
        ok, total = counts.setdefault(finding.check, [0, 0])
        counts[finding.check] = [ok + finding.ok, total + 1]
        if verbose or not finding.ok:
            log.info("%s %-14s %s", "ok  " if finding.ok else "FAIL", finding.check, finding.detail)
    summary = ", ".join(f"{check} {ok}/{total}" for check, (ok, total) in counts.items())
    verdict = "passes" if not report.failures else f"FAILS ({len(report.failures)})"
    log.info("vLLM %s contract %s: %s", report.version, verdict, summary)


if __name__ == "__main__":
    sys.exit(main())
