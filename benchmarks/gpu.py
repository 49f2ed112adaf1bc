"""GPU benchmark (one H200, no network, < 8 minutes): this project's transformers engine on a LLaVA-NeXT-7B-shaped
model with random weights (CLIP ViT-L/14-336 + a Mistral-7B text config, bf16, built from configs: nothing is
downloaded). Measures the device copy bandwidth, time per output token at batch 1 against the memory-bandwidth
floor (LM weight bytes / copy bandwidth), and engine throughput at concurrency 1, 8 and 32.

    python -m benchmarks.gpu                   # on a CUDA machine; writes benchmarks/results/gpu.json
    python -m benchmarks.gpu --tiny            # CPU dry run of every code path with a tiny model (seconds)

Where vLLM is importable (the `gpu` extra), the same call then runs the same waves through the vllm engine
in-process and through the upstream pair (`vllm serve` on the saved model, this project's upstream engine in
front of it), so the first GPU session exercises the real vLLM path; a stage that fails is reported with its
error and the others still run.

Random weights mean the text is noise and a row may meet the end-of-turn token early: the actual completion
tokens are counted and reported. Without CUDA (and without --tiny) it stops at once with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from assistant.messages import user_turn
from benchmarks.common import RESULTS, machine, run_cli, setup_logging, summary, toy_images, write_json

log = logging.getLogger("benchmarks.gpu")

# LLaVA-NeXT-Mistral-7B's shapes: CLIP ViT-L/14 at 336 px, Mistral-7B (GQA 32/8), 5 AnyRes grids.
VISION_7B = dict(
    model_type="clip_vision_model",
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
)
TEXT_7B = dict(
    model_type="mistral",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=32064,
    max_position_embeddings=32768,
    rms_norm_eps=1e-5,
    rope_theta=1_000_000.0,
)
GRIDS_7B = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
VISION_TINY = dict(
    VISION_7B, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
)
VISION_TINY.update(image_size=32, patch_size=8, projection_dim=32)
TEXT_TINY = dict(TEXT_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
TEXT_TINY.update(num_key_value_heads=2, vocab_size=512, max_position_embeddings=2048)
GRIDS_TINY = [[32, 64], [64, 32], [64, 64]]


@dataclass
class GPUBenchArgs:
    tiny: bool = field(
        default=False, metadata={"help": "CPU dry run with a tiny model (tests the code paths)."}
    )
    concurrency: list[int] = field(
        default_factory=lambda: [1, 8, 32], metadata={"help": "Engine concurrency."}
    )
    max_tokens: int = field(default=128, metadata={"help": "max_tokens per request."})
    repeats: int = field(default=3, metadata={"help": "Measured waves per concurrency level."})
    copy_gib: float = field(default=4.0, metadata={"help": "Buffer size of the copy-bandwidth test, GiB."})
    workdir: str | None = field(default=None, metadata={"help": "Where the model is saved (default: temp)."})
    out: str = field(default=str(RESULTS / "gpu.json"), metadata={"help": "JSON results path."})
    vllm_memory: float = field(
        default=0.45,
        metadata={"help": "GPU memory fraction for each vLLM stage (they run one after the other)."},
    )
    vllm_start_s: float = field(default=420.0, metadata={"help": "How long `vllm serve` may take to start."})

    def __post_init__(self) -> None:
        if self.tiny:
            self.max_tokens, self.repeats, self.copy_gib = (
                min(self.max_tokens, 8),
                1,
                min(self.copy_gib, 0.01),
            )
            self.concurrency = [c for c in self.concurrency if c <= 8] or [1]
        if self.max_tokens < 2 or self.repeats < 1 or self.copy_gib <= 0 or min(self.concurrency) < 1:
            raise ValueError(
                "max_tokens must be >= 2, repeats >= 1, copy_gib > 0 and concurrency levels >= 1"
            )


def copy_bandwidth(device: str, gib: float) -> float:
    """Device memory bandwidth in bytes/s from a large copy (bytes read + bytes written)."""
    n = int(gib * 2**30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(10):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    del src, dst
    return 2 * n / best


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_and_save(args: GPUBenchArgs, out: Path, device: str) -> dict:
    """Random-weight LLaVA-NeXT of the 7B shape (or tiny), saved as a normal model directory."""
    from transformers import AutoConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    from assistant.modeling import save_model
    from assistant.processing import build_processor
    from assistant.tokenizer import IMAGE_TOKEN, train_bpe_tokenizer

    vision, text, grids = (
        (VISION_TINY, TEXT_TINY, GRIDS_TINY) if args.tiny else (VISION_7B, TEXT_7B, GRIDS_7B)
    )
    tokenizer = train_bpe_tokenizer(
        [d for d in ("a red circle", "two blue squares", "what is it?")] * 50, 300
    )
    config = LlavaNextConfig(
        vision_config=AutoConfig.for_model(**vision),
        text_config=AutoConfig.for_model(**text),
        image_grid_pinpoints=grids,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(vision["image_size"] // vision["patch_size"]) ** 2,
    )
    dtype = torch.float32 if args.tiny else torch.bfloat16
    start = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaNextForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    processor = build_processor(
        tokenizer,
        tile_size=vision["image_size"],
        patch_size=vision["patch_size"],
        image_grid_pinpoints=grids,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    lm_bytes = sum(
        p.numel() * p.element_size()
        for n, p in model.named_parameters()
        if not n.startswith("model.vision_tower.")
    )
    info = {
        "parameters_b": sum(p.numel() for p in model.parameters()) / 1e9,
        "lm_weight_bytes": lm_bytes,
        "dtype": str(dtype),
        "build_s": time.perf_counter() - start,
    }
    start = time.perf_counter()
    save_model(model, processor, out)
    info["save_s"] = time.perf_counter() - start
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    log.info(
        "built and saved %.2fB parameters in %.0f s + %.0f s",
        info["parameters_b"],
        info["build_s"],
        info["save_s"],
    )
    return info


def batch1_tpot(assistant, image, max_tokens: int, device: str) -> dict:
    """Bare `generate` at batch 1, forced to `max_tokens`: (t(N tokens) - t(1 token)) / (N - 1)."""
    inputs = assistant.prepare(user_turn("Describe the image."), [image])
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(assistant.model.dtype)

    def timed(n: int) -> float:
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            assistant.model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        sync(device)
        return time.perf_counter() - start

    timed(2)  # warm-up
    firsts = [timed(1) for _ in range(3)]
    fulls = [timed(max_tokens) for _ in range(3)]
    ttft = min(firsts)
    tpot = (min(fulls) - ttft) / (max_tokens - 1)
    if tpot <= 0:
        log.warning(
            "batch 1: %d tokens took no longer than 1 (%.1f ms vs %.1f ms): timing noise exceeds the decode time; "
            "rerun on a quiet machine or with a larger --max-tokens",
            max_tokens,
            1e3 * min(fulls),
            1e3 * ttft,
        )
    return {"prompt_tokens": int(inputs["input_ids"].shape[1]), "ttft_s": ttft, "tpot_s": tpot}


async def engine_waves(engine, images, args: GPUBenchArgs) -> dict:
    from assistant.inference import SamplingParams
    from serving.engines.base import GenerationRequest

    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=0.0, min_tokens=args.max_tokens)

    async def one(i: int) -> tuple[float, float, int]:
        request = GenerationRequest(
            request_id=f"bench-{i}",
            messages=user_turn("Describe it."),
            images=[images[i % len(images)]],
            params=params,
        )
        start = time.perf_counter()
        first, tokens = None, 0
        async for delta in await engine.generate(request):
            first = first or time.perf_counter()
            tokens = delta.completion_tokens
        return (first or time.perf_counter()) - start, time.perf_counter() - start, tokens

    results = {}
    for c in args.concurrency:
        await asyncio.gather(*(one(i) for i in range(c)))  # warm-up
        rates, ttfts, token_counts = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            rows = await asyncio.gather(*(one(i) for i in range(c)))
            wall = time.perf_counter() - start
            rates.append(sum(r[2] for r in rows) / wall)
            ttfts += [r[0] for r in rows]
            token_counts += [r[2] for r in rows]
        results[str(c)] = {
            "output_tokens_per_s": summary(rates),
            "ttft_s": summary(ttfts),
            "mean_output_tokens": sum(token_counts) / len(token_counts),
        }
        log.info("engine c=%d: %.0f output tok/s", c, results[str(c)]["output_tokens_per_s"]["median"])
    return results


def run(args: GPUBenchArgs) -> dict:
    from serving.engines.transformers_engine import TransformersEngine
    from serving.metrics import Metrics
    from serving.settings import ServeSettings

    device = "cpu" if args.tiny else "cuda"
    started = time.perf_counter()
    report: dict = {"benchmark": "gpu", "args": asdict(args), "machine": machine()}
    report["copy_bandwidth_bytes_per_s"] = copy_bandwidth(device, args.copy_gib)
    log.info("device copy bandwidth: %.0f GB/s", report["copy_bandwidth_bytes_per_s"] / 1e9)
    images = toy_images(4, seed=4_000, preset="standard")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        model_dir = Path(args.workdir or tmp) / "llava-next-7b-shape"
        report["model"] = build_and_save(args, model_dir, device)
        floor = report["model"]["lm_weight_bytes"] / report["copy_bandwidth_bytes_per_s"]
        dtype = "float32" if args.tiny else "bfloat16"
        settings = ServeSettings(
            model=str(model_dir), device=device, dtype=dtype, max_batch_size=max(args.concurrency), ocr="off"
        )
        # batch 1 first, on a model loaded here; freed before the engine core loads its own copy
        from assistant.inference import Assistant

        assistant = Assistant.load(model_dir, device=device, dtype=dtype)
        bare = batch1_tpot(assistant, images[0], args.max_tokens, device)
        del assistant
        if device == "cuda":
            torch.cuda.empty_cache()
        report["batch1"] = {**bare, "floor_tpot_s": floor, "tpot_over_floor": bare["tpot_s"] / floor}
        log.info(
            "batch 1: TPOT %.2f ms, bandwidth floor %.2f ms (%.2fx), TTFT %.0f ms (%d prompt tokens)",
            1e3 * bare["tpot_s"],
            1e3 * floor,
            bare["tpot_s"] / floor,
            1e3 * bare["ttft_s"],
            bare["prompt_tokens"],
        )
        engine = TransformersEngine(settings, Metrics())

        async def serve() -> dict:
            await engine.start()
            try:
                return await engine_waves(engine, images, args)
            finally:
                await engine.stop(5.0)

        report["engine"] = asyncio.run(serve())
        free(device)
        if importlib.util.find_spec("vllm") is None:
            report["vllm"] = report["upstream"] = {"skipped": "vLLM is not importable (pip install '.[gpu]')"}
        else:
            report["vllm"] = stage("vllm engine", vllm_stage, model_dir, images, args)
            free(device)
            report["upstream"] = stage("upstream over vllm serve", upstream_stage, model_dir, images, args)
    report["seconds"] = time.perf_counter() - started
    log.info("GPU benchmark done in %.0f s", report["seconds"])
    write_json(args.out, report)
    return report


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def stage(name: str, run_stage, *args) -> dict:
    """Run one vLLM stage; a failure is reported (type and message) rather than ending the benchmark."""
    start = time.perf_counter()
    try:
        result = run_stage(*args)
    except Exception as exc:
        log.exception("%s failed", name)
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - start}
    log.info("%s done in %.0f s", name, time.perf_counter() - start)
    return {"engine": result, "seconds": time.perf_counter() - start}


def vllm_stage(model_dir: Path, images, args: GPUBenchArgs) -> dict:
    """The vllm engine in-process (vLLM's AsyncLLM), the same waves as the transformers engine."""
    from serving.engines.vllm_engine import VLLMEngine
    from serving.metrics import Metrics
    from serving.settings import ServeSettings

    settings = ServeSettings(
        engine="vllm",
        model=str(model_dir),
        gpu_memory_utilization=args.vllm_memory,
        ocr="off",
        max_waiting=4096,
    )
    return serve_waves(VLLMEngine(settings, Metrics()), images, args)


def serve_waves(engine, images, args: GPUBenchArgs) -> dict:
    """Start the engine, run the c=1 / c=8 waves, stop it."""

    async def serve() -> dict:
        await engine.start()
        try:
            return {"context": engine.context_length, **await engine_waves(engine, images, args)}
        finally:
            await engine.stop(5.0)

    return asyncio.run(serve())


def upstream_stage(model_dir: Path, images, args: GPUBenchArgs) -> dict:
    """`vllm serve` on the saved model in a subprocess, and this project's upstream engine in front of it."""
    import httpx

    from serving.engines.upstream import UpstreamEngine
    from serving.metrics import Metrics
    from serving.settings import ServeSettings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.cli.main",
        "serve",
        str(model_dir),
        "--port",
        str(port),
    ]
    command += ["--host", "127.0.0.1", "--gpu-memory-utilization", str(args.vllm_memory)]
    command += ["--served-model-name", "bench", "--limit-mm-per-prompt", '{"image": 1}']
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + args.vllm_start_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vllm serve exited with status {server.returncode} before it was healthy")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve was not healthy within {args.vllm_start_s:.0f} s")
            time.sleep(2)
        settings = ServeSettings(engine="upstream", upstream_url=f"http://127.0.0.1:{port}/v1", ocr="off")
        return serve_waves(UpstreamEngine(settings, Metrics()), images, args)
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


def parse_args(argv: list[str] | None = None) -> GPUBenchArgs:
    parser = argparse.ArgumentParser(description="LLaVA-NeXT-7B-shaped engine benchmark on one GPU.")
    parser.add_argument(
        "--tiny", action="store_true", help=GPUBenchArgs.__dataclass_fields__["tiny"].metadata["help"]
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8, 32], help="Engine concurrency levels."
    )
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens per request.")
    parser.add_argument("--repeats", type=int, default=3, help="Measured waves per level.")
    parser.add_argument("--copy-gib", type=float, default=4.0, help="Copy-bandwidth buffer, GiB.")
    parser.add_argument("--workdir", default=None, help="Where the model is saved (default: a temp dir).")
    parser.add_argument("--out", default=str(RESULTS / "gpu.json"), help="JSON results path.")
    parser.add_argument("--quick", action="store_true", help="Same as --tiny (the smoke-test spelling).")
    parser.add_argument("--verbose", action="store_true", help="Debug logging.")
    ns = parser.parse_args(argv)
    setup_logging(ns.verbose)
    values = {k: v for k, v in vars(ns).items() if k in GPUBenchArgs.__dataclass_fields__}
    values["tiny"] = ns.tiny or ns.quick
    try:
        return GPUBenchArgs(**values)
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        log.error("CUDA is not available: this benchmark needs one GPU; run with --tiny for a CPU dry run")
        return 2
    return run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
