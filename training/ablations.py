"""The ablation table: one row per recipe run (and stage), from the evals the recipe wrote.

    python -m training.ablations runs/armA runs/armB --stage stage2 --stage final > table.md

Every run must have been evaluated on the same held-out sets (link `runs/<arm>/data/eval_*` to one copy), which
the table checks from the reports' dataset hashes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = (
    ("VQA", "vqa", "all", "accuracy"),
    ("shape", "vqa", "shape", "accuracy"),
    ("colour", "vqa", "color", "accuracy"),
    ("count", "vqa", "count", "accuracy"),
    ("position", "vqa", "position", "accuracy"),
    ("existence", "vqa", "existence", "accuracy"),
    ("shape@4+", "vqa", "shape@4+", "accuracy"),
    ("colour@4+", "vqa", "color@4+", "accuracy"),
    ("count@4+", "vqa", "count@4+", "accuracy"),
    ("POPE F1", "pope", "all", "f1"),
    ("POPE adv F1", "pope", "adversarial", "f1"),
    ("yes-ratio", "pope", "all", "yes_ratio"),
    ("CHAIR_i", "chair", "all", "chair_i"),
    ("recall", "chair", "all", "coverage"),
    ("relations right", "chair", "relations", "accuracy"),
    ("texts invented", "chair", "texts", "invented_per_description"),
    ("text", "text", "ocr", "accuracy"),
    ("text+hints", "text_ocr_hints", "ocr", "accuracy"),
)


def _cell(summary: dict, bench: str, section: str, metric: str) -> str:
    value = summary.get(bench, {}).get("image", {}).get(section, {}).get(metric)
    return "-" if value is None else f"{value:.3f}"


def _hashes(run: Path, stage: str) -> dict[str, str]:
    """Each benchmark's data, hashed again from the report's source (reports of older code hashed by path)."""
    from evals.data import LOADERS

    out = {}
    for report in (run / "evals" / stage).glob("*/report.json"):
        data = json.loads(report.read_text())
        source = Path(data["dataset"]["source"])
        load = LOADERS.get(data["benchmark"])
        out[report.parent.name] = load(source).hash() if load and source.exists() else data["dataset"]["hash"]
    return out


def _seconds(run: Path) -> str:
    card = run / "final" / "README.md"
    if not card.is_file():
        return "-"
    text = card.read_text()
    start = text.find("## Time on the building machine (seconds)\n`")
    if start < 0:
        return "-"
    timings = json.loads(text[start:].split("`")[1])
    return f"{sum(timings.values()) / 60:.0f} min"


def table(runs: list[Path], stages: list[str]) -> str:
    head = ["run", "stage", *[c[0] for c in COLUMNS], "probe shape (LM last)", "time"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    reference: dict[str, str] = {}
    for run in runs:
        for stage in stages:
            path = run / "evals" / stage / "summary.json"
            if not path.is_file():
                continue
            for bench, digest in _hashes(run, stage).items():
                if reference.setdefault(bench, digest) != digest:
                    raise SystemExit(
                        f"{run} was evaluated on other {bench} data than the first run; link one copy"
                    )
            summary = json.loads(path.read_text())
            probe = summary.get("probe", {}).get("shape", {})
            last = max((k for k in probe if k.startswith("lm.")), key=lambda k: int(k[3:]), default=None)
            cells = [_cell(summary, *c[1:]) for c in COLUMNS]
            probe_cell = (
                f"{probe[last]:.2f} (answer {probe.get('answer', float('nan')):.2f})" if last else "-"
            )
            rows.append(
                "| "
                + " | ".join([run.name, stage, *cells, probe_cell, _seconds(run) if stage == "final" else ""])
                + " |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="Markdown table of recipe runs' evals.")
    parser.add_argument("runs", nargs="+", help="Recipe --workdir directories.")
    parser.add_argument("--stage", action="append", help="stage1, stage2, final (default: all three).")
    args = parser.parse_args(argv)
    text = table([Path(r) for r in args.runs], args.stage or ["stage1", "stage2", "final"])
    sys.stdout.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
