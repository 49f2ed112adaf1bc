"""Preprocessing benchmark: AnyRes images/s (the reference transformers processor, against the fast path in
`assistant.anyres` that the project uses), and the OCR tile path's cost and share of time to first token, with and
without its cache.

    python -m benchmarks.preprocess                      # embedded model (or the stand-in), writes results/
    python -m benchmarks.preprocess --quick --model DIR  # seconds, exercises every path

The reference is transformers' `LlavaNextImageProcessorPil` (what `assistant.processing` builds and saves).
`Assistant.load` and the serving engine put the fast path in its place (`with_fast_anyres`) when it gives the
same pixels, which it does for that processor's settings; both are measured here on the same images.
Time to first token (TTFT) here is in-process: chat template + image processing + prefill + one token,
with the OCR hint in the prompt when OCR ran, at batch 1.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from assistant.messages import user_turn
from benchmarks.common import (
    RESULTS,
    choose_model,
    machine,
    parse_bench_args,
    run_cli,
    summary,
    torch_threads,
    toy_images,
    write_json,
)

log = logging.getLogger("benchmarks.preprocess")


@dataclass
class PreprocessArgs:
    model: str | None = field(
        default=None, metadata={"help": "Model dir (default: embedded, else a stand-in)."}
    )
    images: int = field(default=32, metadata={"help": "Toy-world images per AnyRes repeat."})
    repeats: int = field(default=5, metadata={"help": "Measured repeats (>= 1)."})
    ocr_images: int = field(default=6, metadata={"help": "Text-heavy images for the OCR measurements."})
    ocr_engine: str = field(default="rapidocr", metadata={"help": "OCR engine of assistant.ocr."})
    threads: int = field(
        default=1, metadata={"help": "torch threads (1 is steadier on shared cores; 0 = torch's default)."}
    )
    skip_ocr: bool = field(default=False, metadata={"help": "Measure AnyRes only."})
    out: str = field(default=str(RESULTS / "preprocess.json"), metadata={"help": "JSON results path."})

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")
        for name in ("images", "repeats", "ocr_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


QUICK = dict(images=4, repeats=1, ocr_images=1)


def images_per_s(fn, images: list, repeats: int, desc: str) -> dict:
    fn(images[:1])  # warm-up
    rates = []
    for _ in tqdm(range(repeats), desc=desc, leave=False):
        start = time.perf_counter()
        for image in images:  # one image per call, as a request brings it
            fn([image])
        rates.append(len(images) / (time.perf_counter() - start))
    return summary(rates)


def bench_anyres(args: PreprocessArgs, processor) -> dict:
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from assistant.anyres import anyres_preprocess

    # the reference, even where the processor given is already on the fast path
    image_processor = LlavaNextImageProcessorPil.from_dict(processor.image_processor.to_dict())
    out = {"reference_class": type(image_processor).__name__, "sets": {}}
    for preset in ("tiny", "standard"):
        images = toy_images(args.images, seed=2_000, preset=preset)
        ref = images_per_s(
            lambda x: image_processor(x, return_tensors="pt"), images, args.repeats, f"ref {preset}"
        )
        fast = images_per_s(
            lambda x: anyres_preprocess(x, image_processor), images, args.repeats, f"fast {preset}"
        )
        same = all(
            torch.allclose(
                image_processor([img], return_tensors="pt")["pixel_values"],
                anyres_preprocess([img], image_processor)["pixel_values"],
                atol=1e-6,
            )
            for img in images
        )
        out["sets"][preset] = {
            "sizes": sorted({f"{i.width}x{i.height}" for i in images}),
            "reference_images_per_s": ref,
            "fast_images_per_s": fast,
            "speedup": fast["median"] / ref["median"],
            "allclose": same,
        }
        log.info(
            "AnyRes %s: reference %.0f img/s, fast %.0f img/s (%.2fx), allclose=%s",
            preset,
            ref["median"],
            fast["median"],
            fast["median"] / ref["median"],
            same,
        )
    return out


def ttft(assistant, image, question: str, hint: str) -> float:
    """Seconds from messages to the first generated token, in-process, batch 1."""
    text = f"{hint}\n{question}" if hint else question
    messages = user_turn(text)
    start = time.perf_counter()
    inputs = assistant.prepare(messages, [image])
    with torch.inference_mode():
        assistant.model.generate(**inputs, max_new_tokens=1, do_sample=False)
    return time.perf_counter() - start


def bench_ocr(args: PreprocessArgs, assistant) -> dict:
    from assistant.ocr import OCRReader, format_hint

    images = toy_images(args.ocr_images, seed=3_000, preset="ocr")
    reader = OCRReader(engine=args.ocr_engine)  # the serving default: 320 px windows, 96 px overlap, a cache
    question = "What does the text say?"
    rows = []
    ttft(assistant, images[0], question, "")  # warm-up
    reader.read(images[0].copy().rotate(90, expand=True))  # engine warm-up on an image the cache never sees
    for image in tqdm(images, desc="OCR", leave=False):
        t0 = time.perf_counter()
        has_text = reader.has_text(image)
        check_s = time.perf_counter() - t0
        miss = reader.read(image)  # first sight: every window read
        t1 = time.perf_counter()
        hit = reader.read(image)  # the same image again: hash + cache
        hit_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        reader.has_text(image)  # the ocr=auto check on an image read before: answered from the cache
        check_cached_s = time.perf_counter() - t2
        hint = format_hint(miss) if miss.text.strip() else ""
        # best of two: the first model call after an OCR read can wait on the OCR runtime's spinning threads
        base = min(ttft(assistant, image, question, "") for _ in range(2))
        with_hint = min(ttft(assistant, image, question, hint) for _ in range(2))
        rows.append(
            {
                "size": f"{image.width}x{image.height}",
                "has_text": has_text,
                "lines": len(miss.lines),
                "check_s": check_s,
                "check_cached_s": check_cached_s,
                "read_uncached_s": miss.seconds,
                "read_cached_s": hit_s,
                "cached": hit.cached,
                "ttft_no_ocr_s": base,
                "ttft_with_hint_s": with_hint,
            }
        )

    def share(ocr_key: str, check_key: str | None) -> list[float]:
        return [
            (r[ocr_key] + (r[check_key] if check_key else 0.0))
            / (r[ocr_key] + (r[check_key] if check_key else 0.0) + r["ttft_with_hint_s"])
            for r in rows
        ]

    result = {
        "engine": args.ocr_engine,
        "config": asdict(reader.config),
        "per_image": rows,
        "check_s": summary([r["check_s"] for r in rows]),
        "check_cached_s": summary([r["check_cached_s"] for r in rows]),
        "read_uncached_s": summary([r["read_uncached_s"] for r in rows]),
        "read_cached_s": summary([r["read_cached_s"] for r in rows]),
        "ttft_no_ocr_s": summary([r["ttft_no_ocr_s"] for r in rows]),
        "ttft_with_hint_s": summary([r["ttft_with_hint_s"] for r in rows]),
        # share of TTFT spent in OCR, for ocr=on (read only) and ocr=auto (has_text check + read)
        "share_of_ttft": {
            "on_uncached": summary(share("read_uncached_s", None)),
            "on_cached": summary(share("read_cached_s", None)),
            "auto_uncached": summary(share("read_uncached_s", "check_s")),
            "auto_cached": summary(share("read_cached_s", "check_cached_s")),
        },
    }
    log.info(
        "OCR: check %.3f s, read %.2f s uncached / %.4f s cached; TTFT %.3f s; OCR share of TTFT "
        "(ocr=on) %.0f%% uncached, %.1f%% cached; (ocr=auto) %.0f%% / %.0f%%",
        result["check_s"]["median"],
        result["read_uncached_s"]["median"],
        result["read_cached_s"]["median"],
        result["ttft_no_ocr_s"]["median"],
        100 * result["share_of_ttft"]["on_uncached"]["median"],
        100 * result["share_of_ttft"]["on_cached"]["median"],
        100 * result["share_of_ttft"]["auto_uncached"]["median"],
        100 * result["share_of_ttft"]["auto_cached"]["median"],
    )
    return result


def main(args: PreprocessArgs) -> dict:
    from assistant.inference import Assistant

    with torch_threads(args.threads):
        info = machine()
        choice = choose_model(args.model)
        assistant = Assistant.load(choice.path, device="cpu")
        report = {
            "benchmark": "preprocess",
            "model": asdict(choice),
            "args": asdict(args),
            "machine": info,
            "anyres": bench_anyres(args, assistant.processor),
        }
        if not args.skip_ocr:
            report["ocr"] = bench_ocr(args, assistant)
    write_json(args.out, report)
    return report


def parse_args(argv: list[str] | None = None) -> PreprocessArgs:
    return parse_bench_args(PreprocessArgs, "AnyRes and OCR preprocessing benchmark.", QUICK, argv)


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
