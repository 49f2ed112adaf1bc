"""What every benchmark shares: the model to measure (embedded default, or a stand-in of the recipe's shape),
toy-world inputs, robust statistics, machine facts and the JSON writer."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STANDIN_DIR = Path(os.environ.get("BENCH_STANDIN_DIR", "/tmp/llava-bench-standin"))

# The shape of the toy recipe's model (configs/toy/bootstrap.yaml, pretrain.yaml): 64 px tiles, 16 px patches.
STANDIN_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=64,
    patch_size=16,
)
STANDIN_GRIDS = [[64, 128], [128, 64], [128, 128]]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def standin_language(vocab_size: int) -> dict[str, Any]:
    return dict(
        model_type="llama",
        hidden_size=192,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=vocab_size,
        max_position_embeddings=1024,
    )


def build_standin(out: Path = STANDIN_DIR) -> Path:
    """An untrained LLaVA-NeXT of the recipe's shape (random weights, toy-world BPE), built once and reused."""
    if (out / "config.json").is_file():
        return out
    from assistant.modeling import ModelSpec, build_model, save_model
    from assistant.tokenizer import train_bpe_tokenizer
    from assistant.toyworld import PRESETS, describe, generate_scene

    texts = [describe(generate_scene(seed, PRESETS["tiny"])) for seed in range(300)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=1024)
    spec = ModelSpec(
        vision=STANDIN_VISION,
        language=standin_language(len(tokenizer)),
        tokenizer=tokenizer,
        image_grid_pinpoints=STANDIN_GRIDS,
    )
    model, processor = build_model(spec)
    save_model(model, processor, out)
    log.info("built the stand-in model in %s", out)
    return out


@dataclass(frozen=True)
class ModelChoice:
    path: str
    kind: str  # "given", "embedded" or "stand-in"
    note: str


def choose_model(model: str | None) -> ModelChoice:
    """The model named, else the embedded default, else (saying so) an untrained stand-in of the same shape."""
    from assistant.paths import DEFAULT_MODEL_DIR

    if model:
        return ModelChoice(model, "given", f"model {model}")
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return ModelChoice(str(DEFAULT_MODEL_DIR), "embedded", "the embedded default model")
    path = build_standin()
    note = f"the embedded default model is not built yet; using an UNTRAINED stand-in of the recipe's shape ({path})"
    log.warning(note)
    return ModelChoice(str(path), "stand-in", note)


def toy_images(n: int, seed: int = 0, preset: str = "tiny") -> list:
    """`n` rendered toy-world scenes (PIL RGB), seeds seed..seed+n-1."""
    from assistant.toyworld import PRESETS, generate_scene, render

    return [render(generate_scene(seed + i, PRESETS[preset])) for i in range(n)]


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread (min, max, and the interquartile range when there are enough values)."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    out = {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        out["iqr"] = q[2] - q[0]
    return out


def fmt(stat: dict[str, float], scale: float = 1.0, digits: int = 1) -> str:
    """'median [min-max]' with `scale` applied (e.g. 1000 for ms)."""
    return f"{stat['median'] * scale:.{digits}f} [{stat['min'] * scale:.{digits}f}-{stat['max'] * scale:.{digits}f}]"


def machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": [round(x, 2) for x in load],
    }


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` torch threads (0 keeps the current number), then restore the number."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def matmul_peak_flops(size: int = 1024, seconds: float = 2.0, dtype: str = "float32") -> float:
    """This machine's measured dense matmul rate (FLOP/s): the best of repeated (size x size) @ (size x size)."""
    import torch

    a = torch.randn(size, size, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, dtype=getattr(torch, dtype))
    torch.mm(a, b)  # warm-up
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    log.info("wrote %s", path)
    return path


def parse_bench_args(cls: Any, description: str, quick: dict[str, Any], argv: list[str] | None) -> Any:
    """A benchmark's dataclass from the command line: one flag per field (bools as switches, lists as ints),
    plus --quick (the `quick` settings, for smoke tests) and --verbose; given flags win over --quick."""
    parser = argparse.ArgumentParser(description=description)
    defaults = cls()
    for name, f in cls.__dataclass_fields__.items():
        flag, value, help_text = "--" + name.replace("_", "-"), getattr(defaults, name), f.metadata["help"]
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif isinstance(value, list):
            parser.add_argument(flag, type=int, nargs="+", default=None, help=help_text)
        else:
            parser.add_argument(
                flag, type=type(value) if value is not None else str, default=None, help=help_text
            )
    parser.add_argument("--quick", action="store_true", help="Tiny settings (seconds), for smoke tests.")
    parser.add_argument("--verbose", action="store_true", help="Debug logging.")
    ns = parser.parse_args(argv)
    setup_logging(ns.verbose)
    values = {**(quick if ns.quick else {})}
    values.update({k: v for k, v in vars(ns).items() if k in cls.__dataclass_fields__ and v is not None})
    try:
        return cls(**values)
    except ValueError as exc:
        parser.error(str(exc))


def run_cli(main: Any, args: Any) -> int:
    """Run a benchmark's `main(args)`; a user-facing failure (bad model dir, server that will not start) is one
    logged line and exit status 1, never a traceback (the traceback goes to the debug log)."""
    from assistant.errors import AssistantError

    try:
        main(args)
    except (AssistantError, RuntimeError, OSError) as exc:
        log.debug("benchmark failed", exc_info=True)
        log.error("%s", exc)
        return 1
    return 0


def model_params(model_dir: str | Path) -> int:
    """Parameters in a model directory's safetensors files (read from the headers; nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                total += math.prod(f.get_slice(key).get_shape())
    return total
