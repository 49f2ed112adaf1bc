"""The serving benchmark's report: the goals as ratios against this run's baselines, the table and the plot."""

from __future__ import annotations

import logging
from pathlib import Path

from benchmarks.common import fmt

log = logging.getLogger("benchmarks.serve")


def ratios(results: dict) -> dict:
    """The issue's two goals, against the baselines of this run."""
    gen = results["generate"]
    out: dict = {}
    project = results["project"]
    if "paired_c1" in results:  # the goal's figure: waves of both in turn, so a slow spell hits both
        paired = results["paired_c1"]["latency_ratio"]
        out["c1_latency_vs_generate"] = {
            "value": paired["median"],
            "spread": [paired["min"], paired["max"]],
            "goal": "<= 1.10",
            "met": paired["median"] <= 1.10,
            "how": f"median of {results['paired_c1']['pairs']} paired waves",
        }
    if "1" in project:
        ratio = project["1"]["latency_s"]["median"] / gen["latency_s"]["median"]
        out["c1_latency_vs_generate_blocks"] = {"value": ratio, "how": "medians of separate blocks"}
    if "8" in project:
        ratio = project["8"]["output_tokens_per_s"]["median"] / gen["output_tokens_per_s"]["median"]
        out["c8_tokens_per_s_vs_sequential"] = {"value": ratio, "goal": ">= 4", "met": ratio >= 4.0}
    engine = results.get("engine", {})
    if "1" in engine:
        ratio = engine["1"]["latency_s"]["median"] / gen["latency_s"]["median"]
        out["engine_c1_latency_vs_generate"] = {
            "value": ratio,
            "goal": "<= 1.10 (no HTTP)",
            "met": ratio <= 1.10,
        }
    if "8" in engine:
        ratio = engine["8"]["output_tokens_per_s"]["median"] / gen["output_tokens_per_s"]["median"]
        out["engine_c8_tokens_per_s_vs_sequential"] = {
            "value": ratio,
            "goal": ">= 4 (no HTTP)",
            "met": ratio >= 4,
        }
    for c, row in results["naive"].items():
        out[f"project_vs_naive_tokens_per_s_c{c}"] = {
            "value": project[c]["output_tokens_per_s"]["median"] / row["output_tokens_per_s"]["median"]
            if c in project
            else None
        }
    return out


def table(results: dict) -> str:
    head = (
        f"{'contender':<22}{'c':>3}  {'TTFT ms':>20}  {'TPOT ms':>17}  {'latency ms':>22}  "
        f"{'req/s':>17}  {'out tok/s':>20}  {'tok/req':>7}  {'x seq':>6}"
    )
    seq = results["generate"]["output_tokens_per_s"]["median"]
    rows = [head, "-" * len(head)]

    def line(name: str, c: int, r: dict) -> str:
        return (
            f"{name:<22}{c:>3}  {fmt(r['ttft_s'], 1000):>20}  {fmt(r['tpot_s'], 1000):>17}  "
            f"{fmt(r['latency_s'], 1000):>22}  {fmt(r['requests_per_s'], 1, 2):>17}  "
            f"{fmt(r['output_tokens_per_s']):>20}  {r['mean_output_tokens']['median']:>7.1f}  "
            f"{r['output_tokens_per_s']['median'] / seq:>6.2f}"
        )

    rows.append(line("generate (sequential)", 1, results["generate"]))
    for c, r in results["naive"].items():
        rows.append(line("naive FastAPI server", int(c), r))
    for c, r in results["project"].items():
        rows.append(line("this server", int(c), r))
    for c, r in results.get("engine", {}).items():
        rows.append(line("its engine, no HTTP", int(c), r))
    return "\n".join(rows)


def plot(results: dict, path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 4.2), dpi=120)
    contenders = (
        ("project", "this server (HTTP)", "o"),
        ("engine", "its engine, no HTTP", "^"),
        ("naive", "naive FastAPI server", "s"),
    )
    for key, label, marker in contenders:
        rows = results.get(key, {})
        if not rows:
            continue
        xs = [int(c) for c in rows]
        med = [rows[c]["output_tokens_per_s"]["median"] for c in rows]
        lo = [m - rows[c]["output_tokens_per_s"]["min"] for m, c in zip(med, rows, strict=True)]
        hi = [rows[c]["output_tokens_per_s"]["max"] - m for m, c in zip(med, rows, strict=True)]
        ax.errorbar(xs, med, yerr=[lo, hi], marker=marker, capsize=3, label=label)
    seq = results["generate"]["output_tokens_per_s"]["median"]
    ax.axhline(seq, color="grey", linestyle="--", label="sequential generate")
    ax.axhline(4 * seq, color="grey", linestyle=":", label="goal at c=8: 4x sequential")
    ax.set_xscale("log", base=2)
    levels = sorted({int(c) for key in ("project", "engine", "naive") for c in results.get(key, {})})
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.minorticks_off()
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("output tokens/s (median, min-max)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log.info("wrote %s", path)
    return path
