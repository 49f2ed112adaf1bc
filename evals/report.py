"""Reports: `report.json` (scores, config, model, dataset hash, code version), `report.md` and
`report.png` (headline metrics with the image beside the blind, language-prior baseline)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Sections = dict[str, dict[str, float]]  # section (e.g. POPE category, skill) -> metric -> value


def code_version() -> str:
    """`git describe --always --dirty` of the checkout, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return metadata.version("llava-assistant")
        except metadata.PackageNotFoundError:
            return "unknown"


def flatten(scores: Any) -> dict[str, float]:
    """Numeric fields of a scores dataclass (nested dicts of them become `key.field`)."""
    raw = dataclasses.asdict(scores) if dataclasses.is_dataclass(scores) else dict(scores)
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, int | float):
            out[key] = value
        elif isinstance(value, dict):
            for sub, v in flatten(value).items():
                out[f"{key}.{sub}"] = v
    return out


@dataclass
class Report:
    benchmark: str
    model: str
    endpoint: str
    dataset: dict[str, Any]
    config: dict[str, Any]
    headline: tuple[str, ...]  # metrics drawn in the chart and listed first
    scores: dict[str, Sections]  # "image" / "blind" -> sections
    errors: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # prompts, judge model, parsing conventions
    code_version: str = field(default_factory=code_version)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    def gap(self) -> Sections:
        """image minus blind, for every metric both runs have."""
        if "image" not in self.scores or "blind" not in self.scores:
            return {}
        image, blind = self.scores["image"], self.scores["blind"]
        return {
            s: {m: image[s][m] - blind[s][m] for m in image[s] if m in blind.get(s, {})}
            for s in image
            if s in blind
        }

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["headline"] = list(self.headline)
        d["scores"]["gap"] = self.gap()
        return d


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.png under `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "png": out_dir / "report.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(report), encoding="utf-8")
    chart(report, paths["png"])
    log.info("wrote %s, %s and %s", *paths.values())
    return paths


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) and not float(v).is_integer() else f"{v:g}"


def markdown(report: Report) -> str:
    gap = report.gap()
    image, blind = report.scores.get("image", {}), report.scores.get("blind", {})
    lines = [
        f"# {report.benchmark} — {report.model}",
        "",
        f"- endpoint: {report.endpoint}",
        f"- dataset: {report.dataset.get('source')} (hash {report.dataset.get('hash')}, "
        f"{report.dataset.get('n')} questions)",
        f"- code version: {report.code_version}; created {report.created}",
    ]
    lines += [f"- errors ({mode}): {n}" for mode, n in report.errors.items()]
    long = {k: v for k, v in report.notes.items() if isinstance(v, str) and "\n" in v}
    lines += [
        f"- {k}: {v}" for k, v in report.notes.items() if isinstance(v, str | int | float) and k not in long
    ]
    lines += ["", "| section | metric | image | blind | gap |", "|---|---|---:|---:|---:|"]
    for section, metrics in image.items():
        order = [m for m in report.headline if m in metrics] + [
            m for m in metrics if m not in report.headline
        ]
        for m in order:
            b = blind.get(section, {}).get(m)
            g = gap.get(section, {}).get(m)
            lines.append(f"| {section} | {m} | {_fmt(metrics[m])} | {_fmt(b)} | {_fmt(g)} |")
    if not blind:
        lines += ["", "No blind baseline in this run: pass --blind to measure what the text alone gives."]
    for k, v in long.items():
        lines += ["", f"{k}:", "", "```text", v, "```"]
    return "\n".join(lines) + "\n"


def chart(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, blind = report.scores.get("image", {}), report.scores.get("blind", {})
    labels, ys_image, ys_blind = [], [], []
    for section, metrics in image.items():
        for m in report.headline:
            if m in metrics:
                labels.append(f"{section}\n{m}")
                ys_image.append(metrics[m])
                ys_blind.append(blind.get(section, {}).get(m, float("nan")))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4))
    xs = range(len(labels))
    width = 0.4 if blind else 0.8
    ax.bar([x - (width / 2 if blind else 0) for x in xs], ys_image, width, label="image")
    if blind:
        ax.bar([x + width / 2 for x in xs], ys_blind, width, label="blind (no image)")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_title(f"{report.benchmark}: {report.model}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
