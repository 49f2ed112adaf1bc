"""Connector benchmark: the same image requests through this server for several models (an MLP/AnyRes model and
Q-Former models), in one run, with ratios against the first model.

    python -m benchmarks.connectors --models runs/armD/final,runs/armQ32/final,runs/armQ16/final
    python -m benchmarks.connectors --quick --models A,B      # seconds: exercises every path

Per model: visual tokens per image (the image tokens the processor writes for one toy-world image), time to first
token (TTFT) and output tokens/s at each concurrency through the API (streamed, greedy, every answer exactly
`--max-tokens` long), and KV-cache bytes per request (2 x layers x KV heads x head size x bytes per value x the
request's tokens: prompt + max_tokens). Figures are medians over `--repeats` waves after a warm-up wave.

At concurrency 1 the models' blocks run one after the other, so a slow spell of a shared machine lands on one model
only; the TTFT there differs by a few milliseconds between models of this size. So TTFT at concurrency 1 is also
measured paired (`--paired_rounds`): every model's server up at once, one wave of `--paired_requests` sequential
requests each per round, the order rotating from round to round, and each round's median TTFT divided by the
baseline's of the same round (`paired_ttft_ratio_c1`: median and spread over rounds).
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

from benchmarks.common import RESULTS, machine, parse_bench_args, run_cli, summary, toy_images, write_json
from benchmarks.serve import QUESTIONS, ServeBenchArgs, bench_server, client_wave, data_url, workload
from benchmarks.servers import ServerProcess

log = logging.getLogger("benchmarks.connectors")


@dataclass
class ConnectorBenchArgs:
    models: str = field(
        default="", metadata={"help": "Comma-separated model directories; the first is the baseline."}
    )
    concurrency: list[int] = field(default_factory=lambda: [1, 8], metadata={"help": "Concurrency levels."})
    max_tokens: int = field(default=16, metadata={"help": "max_tokens of every request (min_tokens too)."})
    repeats: int = field(default=3, metadata={"help": "Measured waves per model and level (>= 1)."})
    requests_per_worker: int = field(default=2, metadata={"help": "Requests per concurrent client per wave."})
    images: int = field(default=8, metadata={"help": "Distinct toy-world images cycled through."})
    paired_rounds: int = field(
        default=12, metadata={"help": "Rounds of the paired TTFT measurement at concurrency 1 (0: skip it)."}
    )
    paired_requests: int = field(
        default=4, metadata={"help": "Sequential requests per model per paired round."}
    )
    out: str = field(default=str(RESULTS / "connectors.json"), metadata={"help": "JSON results path."})

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.paired_rounds < 0 or self.paired_requests < 1:
            raise ValueError(
                f"paired_rounds must be >= 0 and paired_requests >= 1, got {self.paired_rounds}, "
                f"{self.paired_requests}"
            )


QUICK = dict(
    concurrency=[1, 2],
    max_tokens=4,
    repeats=1,
    requests_per_worker=1,
    images=2,
    paired_rounds=2,
    paired_requests=1,
)


def paired_ttft_c1(models: list[str], images: list, args: ConnectorBenchArgs) -> dict:
    """TTFT at concurrency 1 with every model's server up at once, in rounds: one wave of `paired_requests`
    sequential requests per model per round, the order rotated each round. Per model: the median TTFT over all its
    requests, and each round's median TTFT over the baseline's of the same round."""
    work = workload(args.paired_requests, [data_url(image) for image in images])
    servers = []
    try:
        for model in models:
            servers.append(ServerProcess("project", model, ServeBenchArgs.max_batch_size, 0))
        names = [httpx.get(s.base_url + "/v1/models").json()["data"][0]["id"] for s in servers]

        def wave(i: int) -> list[float]:
            samples, _ = asyncio.run(client_wave(servers[i].base_url, names[i], work, 1, args.max_tokens))
            return [s.ttft for s in samples]

        for i in range(len(models)):
            wave(i)  # warm-up
        ttfts: list[list[float]] = [[] for _ in models]
        ratios: list[list[float]] = [[] for _ in models]
        for r in tqdm(range(args.paired_rounds), desc="paired TTFT c=1", leave=False):
            medians = {}
            for k in range(len(models)):
                i = (k + r) % len(models)
                got = wave(i)
                ttfts[i] += got
                medians[i] = statistics.median(got)
            for i in range(len(models)):
                ratios[i].append(medians[i] / medians[0])
    finally:
        for server in servers:
            server.close()
    return {
        model: {
            "paired_ttft_ms_c1": round(1000 * statistics.median(ttfts[i]), 1),
            "paired_ttft_ratio_c1": {k: round(v, 3) for k, v in summary(ratios[i]).items()},
        }
        for i, model in enumerate(models)
    }


def static_figures(model_dir: str, image) -> dict:
    """Visual tokens per image, prompt tokens of one image question, and KV-cache bytes per value position."""
    from transformers import AutoConfig

    from assistant.processing import image_question_tokens, load_processor

    config = AutoConfig.from_pretrained(model_dir)
    visual, prompt = image_question_tokens(load_processor(model_dir), config, image, QUESTIONS[0])
    text = config.text_config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return {
        "architecture": config.architectures[0] if config.architectures else config.model_type,
        "visual_tokens_per_image": visual,
        "prompt_tokens": prompt,
        "kv_bytes_per_token": 2 * text.num_hidden_layers * kv_heads * head_dim * 2,  # fp16/bf16 cache
    }


def main(args: ConnectorBenchArgs) -> dict:
    models = [m for m in args.models.split(",") if m]
    if not models:
        raise ValueError("give --models DIR[,DIR...] (the first is the baseline)")
    images = toy_images(args.images, seed=1_000)
    serve_args = ServeBenchArgs(
        model=None,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        repeats=args.repeats,
        requests_per_worker=args.requests_per_worker,
        sequential_requests=1,
    )
    rows = {}
    for model in models:
        figures = static_figures(model, images[0])
        figures["kv_bytes_per_request"] = figures["kv_bytes_per_token"] * (
            figures["prompt_tokens"] + args.max_tokens
        )
        served = bench_server(serve_args, "project", model, args.concurrency, images)
        for c, result in served.items():
            figures[f"ttft_ms_c{c}"] = round(1000 * result["ttft_s"]["median"], 1)
            figures[f"output_tokens_per_s_c{c}"] = round(result["output_tokens_per_s"]["median"], 1)
        rows[model] = figures
        log.info("%s: %s", model, figures)
    if args.paired_rounds:
        for model, paired in paired_ttft_c1(models, images, args).items():
            rows[model]["paired_ttft_ms_c1"] = paired["paired_ttft_ms_c1"]
            rows[model]["paired_ttft_ratio_c1"] = paired["paired_ttft_ratio_c1"]
    base = rows[models[0]]
    ratios = {
        model: {
            key: round(value / base[key], 3)
            for key, value in row.items()
            if isinstance(value, int | float) and base.get(key)
        }
        for model, row in rows.items()
    }
    report = {
        "benchmark": "connectors",
        "baseline": models[0],
        "args": asdict(args),
        "machine": {**machine(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": rows,
        "ratios_to_baseline": ratios,
    }
    log.info("connectors (ratios to %s):\n%s", models[0], table(rows, ratios, args.concurrency))
    for model, row in rows.items():
        if "paired_ttft_ratio_c1" in row:
            r = row["paired_ttft_ratio_c1"]
            log.info(
                "%s: paired TTFT c=1 %.1f ms, %.3fx the baseline (rounds: min %.3f, max %.3f)",
                model,
                row["paired_ttft_ms_c1"],
                r["median"],
                r["min"],
                r["max"],
            )
    write_json(args.out, report)
    return report


def table(rows: dict, ratios: dict, levels: list[int]) -> str:
    keys = ["visual_tokens_per_image", "kv_bytes_per_request"]
    keys += [f"ttft_ms_c{c}" for c in levels] + [f"output_tokens_per_s_c{c}" for c in levels]
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for model, row in rows.items():
        cells = [f"{row[k]} ({ratios[model].get(k, 1.0):.2f}x)" for k in keys]
        lines.append(f"| {Path(model).parent.name}/{Path(model).name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> ConnectorBenchArgs:
    return parse_bench_args(
        ConnectorBenchArgs, "Connector benchmark: MLP vs Q-Former through the API.", QUICK, argv
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
