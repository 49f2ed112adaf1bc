"""Serving benchmark: bare `model.generate`, a naive one-at-a-time FastAPI server, and this project's server at
concurrency 1, 2, 4, 8, 16, in one run, on the same prompts and toy-world images (greedy, max_tokens fixed).

    python -m benchmarks.serve                      # embedded model (or the stand-in), writes benchmarks/results/
    python -m benchmarks.serve --quick --model DIR  # seconds: tiny settings, exercises every path

Metrics per request: time to first token (TTFT), time per output token after the first (TPOT), latency; per
repeat: requests/s and output tokens/s. Each contender gets a warm-up wave, then `--repeats` waves; figures are
the median over repeats with [min-max]. Ratios are against the baselines measured in this same run.
The engine behind this server is also measured without HTTP (called from Python, its engine core process
and all, no client in the loop), which separates the engine's cost from the HTTP stack's. Every answer has
exactly `--max-tokens` tokens: the end of turn is held back with `min_new_tokens` (generate) and vLLM's
`min_tokens` extra (both servers, the engine), so a trained model that answers "3" and stops still does the
same work in every contender; the completion tokens (from
`usage`) are reported and checked. Threads as shipped by default: this server chooses by assistant.threads' rule
(1 for the embedded model) and every other contender gets the same count (`--threads N` fixes it for all).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

from assistant.messages import user_turn
from benchmarks.common import (
    RESULTS,
    choose_model,
    machine,
    model_params,
    parse_bench_args,
    run_cli,
    summary,
    torch_threads,
    toy_images,
    write_json,
)
from benchmarks.serve_report import plot, ratios, table
from benchmarks.servers import ServerProcess

log = logging.getLogger("benchmarks.serve")
QUESTIONS = [
    "Describe the image in detail.",
    "What objects are in the picture, and where are they?",
    "Describe every shape, its colour and its position.",
    "Tell me about this scene.",
]


@dataclass
class ServeBenchArgs:
    model: str | None = field(
        default=None, metadata={"help": "Model dir (default: embedded, else a stand-in)."}
    )
    concurrency: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "Concurrency levels for this server."}
    )
    naive_concurrency: list[int] = field(
        default_factory=lambda: [1, 8], metadata={"help": "Concurrency levels for the naive server."}
    )
    max_tokens: int = field(default=32, metadata={"help": "max_tokens of every request."})
    repeats: int = field(default=5, metadata={"help": "Measured waves per contender and level (>= 1)."})
    requests_per_worker: int = field(
        default=2,
        metadata={
            "help": "Requests each client sends per wave (a wave has at least --sequential-requests, so "
            "low-concurrency waves are as long as the generate baseline's)."
        },
    )
    sequential_requests: int = field(default=8, metadata={"help": "Bare generate calls per repeat."})
    threads: int = field(
        default=0,
        metadata={
            "help": "torch threads of every contender; 0 = as shipped: the project's rule (assistant.threads) "
            "for this server, and the count it chooses for the others."
        },
    )
    max_batch_size: int = field(default=16, metadata={"help": "This server's --max-batch-size."})
    images: int = field(default=8, metadata={"help": "Distinct toy-world images cycled through."})
    out: str = field(default=str(RESULTS / "serve.json"), metadata={"help": "JSON results path."})
    plot: str = field(default=str(RESULTS / "serve_throughput.png"), metadata={"help": "PNG plot path."})

    def __post_init__(self) -> None:
        for name in ("max_tokens", "repeats", "requests_per_worker", "sequential_requests", "images"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")
        if not self.concurrency or min(self.concurrency + self.naive_concurrency) < 1:
            raise ValueError("concurrency levels must be >= 1; give e.g. --concurrency 1 2 4 8 16")


QUICK = dict(
    concurrency=[1, 2],
    naive_concurrency=[1],
    max_tokens=4,
    repeats=1,
    requests_per_worker=1,
    sequential_requests=2,
)


@dataclass
class Sample:
    ttft: float
    latency: float
    tokens: int
    pieces: int = 0  # text deltas received (SSE chunks with content; tokens when nothing coalesced)

    @property
    def tpot(self) -> float:
        return (self.latency - self.ttft) / max(self.tokens - 1, 1)


def wave_size(args: ServeBenchArgs, concurrency: int) -> int:
    return max(concurrency * args.requests_per_worker, args.sequential_requests)


def workload(n: int, images: list) -> list[tuple[str, object]]:
    return [(QUESTIONS[i % len(QUESTIONS)], images[i % len(images)]) for i in range(n)]


def wave_stats(samples: list[Sample], wall: float) -> dict[str, float]:
    tokens = sum(s.tokens for s in samples)
    return {
        "wall_s": wall,
        "requests_per_s": len(samples) / wall,
        "output_tokens_per_s": tokens / wall,
        "ttft_s": statistics.median(s.ttft for s in samples),
        "tpot_s": statistics.median(s.tpot for s in samples),
        "latency_s": statistics.median(s.latency for s in samples),
        "mean_output_tokens": tokens / len(samples),
        "text_deltas_per_request": sum(s.pieces for s in samples) / len(samples),
    }


def aggregate(waves: list[dict[str, float]], samples: list[Sample]) -> dict:
    keys = waves[0].keys()
    out = {key: summary([w[key] for w in waves]) for key in keys}
    out["per_request_latency_s"] = summary([s.latency for s in samples])
    out["per_request_ttft_s"] = summary([s.ttft for s in samples])
    return out


# --- bare generate ----------------------------------------------------------------------------------------


def generate_runner(args: ServeBenchArgs, model_dir: str):
    """A function (question, image) -> Sample that answers with bare `model.generate`, timed by a streamer."""
    from transformers.generation.streamers import BaseStreamer

    from assistant.inference import Assistant

    assistant = Assistant.load(model_dir, device="cpu")

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.calls: list[float] = []

        def put(self, value) -> None:  # first call: the prompt; then one call per new token
            self.calls.append(time.perf_counter())

        def end(self) -> None:
            pass

    def one(question: str, image) -> Sample:
        start = time.perf_counter()
        messages = user_turn(question)
        inputs = assistant.prepare(messages, [image])
        clock = Clock()
        ids = assistant.model.generate(
            **inputs,
            max_new_tokens=args.max_tokens,
            min_new_tokens=args.max_tokens,
            do_sample=False,
            streamer=clock,
        )
        end = time.perf_counter()
        tokens = int(ids.shape[1] - inputs["input_ids"].shape[1])
        first = clock.calls[1] if len(clock.calls) > 1 else end
        return Sample(first - start, end - start, tokens)

    return one


def bench_generate(args: ServeBenchArgs, model_dir: str, images: list) -> dict:
    one = generate_runner(args, model_dir)
    work = workload(args.sequential_requests, images)
    one(*work[0])  # warm-up
    waves, samples = [], []
    for _ in tqdm(range(args.repeats), desc="generate (sequential)", leave=False):
        start = time.perf_counter()
        wave = [one(q, img) for q, img in work]
        waves.append(wave_stats(wave, time.perf_counter() - start))
        samples += wave
    return aggregate(waves, samples)


def bench_paired_c1(args: ServeBenchArgs, model_dir: str, images: list) -> dict:
    """Bare `generate` and this server at concurrency 1, wave for wave in turn (which goes first alternates):
    the ratio of each pair's median latencies. A slow spell of a shared machine then hits both sides of a
    pair instead of one contender's whole block, so this ratio is steadier than the blocks' medians."""
    one = generate_runner(args, model_dir)
    work = workload(args.sequential_requests, images)
    server_work = workload(args.sequential_requests, [data_url(image) for image in images])
    server = ServerProcess("project", model_dir, args.max_batch_size, args.threads)
    try:
        model = httpx.get(server.base_url + "/v1/models").json()["data"][0]["id"]

        def generate_wave() -> float:
            return statistics.median(one(q, img).latency for q, img in work)

        def server_wave() -> float:
            samples, _ = asyncio.run(client_wave(server.base_url, model, server_work, 1, args.max_tokens))
            return statistics.median(s.latency for s in samples)

        generate_wave(), server_wave()  # warm-up
        pairs = []
        for i in tqdm(range(2 * args.repeats), desc="generate / this server c=1, paired", leave=False):
            if i % 2:
                served, bare = server_wave(), generate_wave()
            else:
                bare, served = generate_wave(), server_wave()
            pairs.append((bare, served))
    finally:
        server.close()
    return {
        "pairs": len(pairs),
        "generate_latency_s": summary([b for b, _ in pairs]),
        "project_latency_s": summary([s for _, s in pairs]),
        "latency_ratio": summary([s / b for b, s in pairs]),
    }


# --- servers ------------------------------------------------------------------------------------------------


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def _request(client, model: str, question: str, url: str, max_tokens: int) -> Sample:
    start = time.perf_counter()
    first, tokens, pieces = None, 0, 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": question},
                ],
            }
        ],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"min_tokens": max_tokens},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if first is None:
                first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return Sample((first or end) - start, end - start, tokens, pieces)


async def client_wave(
    base_url: str, model: str, work: list[tuple[str, str]], concurrency: int, max_tokens: int
) -> tuple:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=base_url + "/v1", api_key="bench", max_retries=0, timeout=600) as client:
        pending = list(work)
        samples: list[Sample] = []

        async def worker() -> None:
            while pending:
                question, url = pending.pop(0)
                samples.append(await _request(client, model, question, url, max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return samples, time.perf_counter() - start


def bench_server(args: ServeBenchArgs, kind: str, model_dir: str, levels: list[int], images: list) -> dict:
    urls = [data_url(img) for img in images]
    import torch

    threads = args.threads if kind == "project" else args.threads or torch.get_num_threads()
    server = ServerProcess(kind, model_dir, args.max_batch_size, threads)
    base = server.base_url
    model = httpx.get(base + "/v1/models").json()["data"][0]["id"] if kind == "project" else "naive"
    results = {}
    try:
        for c in levels:
            work = workload(wave_size(args, c), urls)  # the same questions, the images as data URLs
            asyncio.run(client_wave(base, model, work[:c], c, args.max_tokens))  # warm-up
            waves, samples = [], []
            for _ in tqdm(range(args.repeats), desc=f"{kind} server c={c}", leave=False):
                wave, wall = asyncio.run(client_wave(base, model, work, c, args.max_tokens))
                waves.append(wave_stats(wave, wall))
                samples += wave
            results[str(c)] = aggregate(waves, samples)
            log.info("%s c=%d: %.1f output tok/s", kind, c, results[str(c)]["output_tokens_per_s"]["median"])
    finally:
        server.close()
    return results


# --- this server's engine without HTTP (called from Python): the engine's cost apart from the HTTP stack's ---


def bench_engine(args: ServeBenchArgs, model_dir: str, levels: list[int], images: list) -> dict:
    from assistant.inference import SamplingParams
    from serving.engines.base import GenerationRequest
    from serving.engines.transformers_engine import TransformersEngine
    from serving.metrics import Metrics
    from serving.settings import ServeSettings

    settings = ServeSettings(model=model_dir, device="cpu", ocr="off", max_batch_size=args.max_batch_size)
    engine = TransformersEngine(settings, Metrics())
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=0.0, min_tokens=args.max_tokens)

    async def one(question: str, image) -> Sample:
        request = GenerationRequest("bench", user_turn(question), [image], params)
        start, first, tokens = time.perf_counter(), None, 0
        pieces = 0
        async for delta in await engine.generate(request):
            if delta.text:
                pieces += 1
                if first is None:
                    first = time.perf_counter()
            tokens = delta.completion_tokens
        end = time.perf_counter()
        return Sample((first or end) - start, end - start, tokens, pieces)

    async def wave(work: list, concurrency: int) -> tuple[list[Sample], float]:
        pending, samples = list(work), []

        async def worker() -> None:
            while pending:
                samples.append(await one(*pending.pop(0)))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return samples, time.perf_counter() - start

    async def run() -> dict:
        await engine.start()
        results = {}
        try:
            for c in levels:
                work = workload(wave_size(args, c), images)
                await wave(work[:c], c)  # warm-up
                waves, samples = [], []
                for _ in tqdm(range(args.repeats), desc=f"engine, no HTTP, c={c}", leave=False):
                    got, wall = await wave(work, c)
                    waves.append(wave_stats(got, wall))
                    samples += got
                results[str(c)] = aggregate(waves, samples)
                log.info(
                    "engine c=%d: %.1f output tok/s", c, results[str(c)]["output_tokens_per_s"]["median"]
                )
        finally:
            await engine.stop(5.0)
        return results

    return asyncio.run(run())


def output_lengths(results: dict) -> dict[str, float]:
    """Median output tokens per request of every contender and level ("generate", "project c=8", ...)."""
    out = {"generate": results["generate"]["mean_output_tokens"]["median"]}
    for kind in ("naive", "project", "engine"):
        for c, row in results[kind].items():
            out[f"{kind} c={c}"] = row["mean_output_tokens"]["median"]
    return out


def main(args: ServeBenchArgs) -> dict:
    from assistant.threads import choose_threads

    choice = choose_model(args.model)
    # the project's server chooses by its rule (0); the contenders get the count that rule gives, so all compare alike
    same = args.threads or choose_threads(model_params(choice.path)).threads
    with torch_threads(same):
        info = machine()
        images = toy_images(args.images, seed=1_000)
        results: dict = {"generate": bench_generate(args, choice.path, images)}
        results["naive"] = bench_server(args, "naive", choice.path, args.naive_concurrency, images)
        results["project"] = bench_server(args, "project", choice.path, args.concurrency, images)
        results["engine"] = bench_engine(args, choice.path, args.concurrency, images)
        results["paired_c1"] = bench_paired_c1(args, choice.path, images)
    lengths = output_lengths(results)
    if set(lengths.values()) != {float(args.max_tokens)}:
        log.warning(
            "answers are not all %d tokens long, so ratios compare different work: %s",
            args.max_tokens,
            lengths,
        )
    report = {
        "benchmark": "serve",
        "output_tokens_per_request": lengths,
        "model": asdict(choice),
        "args": asdict(args),
        "machine": {**info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
        "ratios": ratios(results),
    }
    text = table(results)
    log.info("serving benchmark (%s), median [min-max] over %d repeats:\n%s", choice.note, args.repeats, text)
    for name, r in report["ratios"].items():
        log.info("%s: %s", name, r)
    write_json(args.out, report)
    title = f"{Path(choice.path).name} ({choice.kind}), max_tokens={args.max_tokens}, {args.threads or 'as shipped'} torch thread(s)"
    plot(results, args.plot, title)
    return report


def parse_args(argv: list[str] | None = None) -> ServeBenchArgs:
    return parse_bench_args(
        ServeBenchArgs, "Serving benchmark: generate vs naive server vs this server.", QUICK, argv
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
