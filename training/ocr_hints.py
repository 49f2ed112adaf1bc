"""OCR hints in training conversations: the model half of OCR-aware tiling.

    python -m training.ocr_hints --data runs/toy/data/instruct --share 0.5

The service reads scene text with a real OCR engine and puts it in the user turn as a hint
(`assistant.ocr.format_hint`, placed by `insert_hint`). A model never trained with hints ignores them, so a share
of the conversations whose image has text get the same hint here: read by the same engine from the training image
(noisy, as at serving time, never the ground truth), formatted and placed exactly as the service does. The
conversations are rewritten in place (`messages.jsonl` and `llava.json`); the manifest records what was done, and a
second run on the same directory does nothing.

The reads are spread over processes (`workers`; 0: the CPUs idle when it starts, `assistant.threads.choose_workers`),
each with a one-thread engine, so the hints are the same whatever the number of processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

log = logging.getLogger(__name__)


def _images_with_text(data: Path) -> set[str]:
    scenes = data / "scenes.jsonl"
    if not scenes.is_file():
        raise FileNotFoundError(f"{scenes} is missing; OCR hints need a toy-world directory with its scenes")
    rows = (json.loads(line) for line in scenes.read_text().splitlines() if line.strip())
    return {r["image"] for r in rows if r.get("texts")}


_WORKER_READER: Any = None


def _one_thread_reader() -> Any:
    from assistant.ocr import OCRReader
    from assistant.ocr.engines import RapidOCREngine

    # one onnxruntime thread: the same reads in one process or several (a thread pool may sum in another order)
    return OCRReader(engine=RapidOCREngine(threads=1))


def _start_worker() -> None:
    global _WORKER_READER
    _WORKER_READER = _one_thread_reader()


def _hint(image: Path, reader: Any = None) -> str:
    from assistant.ocr import format_hint

    with Image.open(image) as im:
        return format_hint((reader or _WORKER_READER).read(im.convert("RGB")))


def _read_hints(images: list[Path], reader: Any, workers: int) -> Iterator[str]:
    """Each image's hint, in order: in this process with `reader` (or one made here), or over `workers` processes."""
    if workers <= 1 or len(images) < 2 * workers:
        reader = reader or _one_thread_reader()
        yield from (_hint(image, reader) for image in images)
        return
    spawn = multiprocessing.get_context("spawn")  # not fork: the parent may hold torch's thread pool
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_start_worker) as pool:
        yield from pool.map(_hint, images, chunksize=8)


def add_ocr_hints(
    data: Path, share: float, seed: int = 0, reader: Any = None, workers: int = 0
) -> dict[str, int]:
    """Give a hint to `share` of the conversations whose image has text; returns the counts it wrote. `reader`: an
    `OCRReader` to read with in this process; else `workers` processes (0: by `choose_workers`)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if "ocr_hints" in manifest:
        log.info("%s already has OCR hints (%s); leaving it", data, manifest["ocr_hints"])
        return manifest["ocr_hints"]
    from assistant.ocr import insert_hint
    from assistant.threads import ThreadChoice, choose_workers
    from assistant.toyworld.writers import IMAGE_TOKEN

    with_text = _images_with_text(data)
    rows = [json.loads(line) for line in (data / "messages.jsonl").read_text().splitlines() if line.strip()]
    llava = json.loads((data / "llava.json").read_text())
    if len(rows) != len(llava):
        raise ValueError(
            f"{data}: messages.jsonl has {len(rows)} rows, llava.json {len(llava)}; regenerate it"
        )
    rng = random.Random(f"ocr_hints:{seed}")
    counts = {"eligible": 0, "hinted": 0, "empty_reads": 0}
    picked = []  # the rows to hint, drawn in order
    for i, row in enumerate(rows):
        if row["images"][0] not in with_text:
            continue
        counts["eligible"] += 1
        if rng.random() < share:
            picked.append(i)
    # a reader given is read with here, in this process: no processes to choose (nor idle CPUs to measure)
    choice = ThreadChoice(1, "the reader given") if reader is not None else choose_workers(workers)
    log.info("OCR hints for %d of %d conversations; processes: %s", len(picked), len(rows), choice)
    hints = _read_hints([data / rows[i]["images"][0] for i in picked], reader, choice.threads)
    for i, hint in zip(picked, tqdm(hints, total=len(picked), desc="ocr hints", unit="image"), strict=True):
        if not hint:  # the engine read nothing: the conversation stays as it is, as the service would send it
            counts["empty_reads"] += 1
            continue
        first = rows[i]["messages"][0]
        first["content"] = insert_hint(first["content"], hint)
        turn = llava[i]["conversations"][0]
        question = turn["value"].removeprefix(f"{IMAGE_TOKEN}\n")
        turn["value"] = f"{IMAGE_TOKEN}\n{hint}\n{question}"
        counts["hinted"] += 1
    (data / "messages.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (data / "llava.json").write_text(json.dumps(llava, indent=1, ensure_ascii=False) + "\n")
    manifest["ocr_hints"] = {"share": share, "seed": seed, **counts}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    log.info("OCR hints in %s: %s", data, manifest["ocr_hints"])
    return manifest["ocr_hints"]


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(
        description="Add real OCR hints to a share of a toy-world dataset's turns."
    )
    parser.add_argument("--data", required=True, help="A toy-world conversation dataset directory.")
    parser.add_argument("--share", type=float, default=0.5, help="Share of conversations with text to hint.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Processes reading the images (0: the CPUs idle when it starts).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return add_ocr_hints(Path(args.data), args.share, args.seed, workers=args.workers)


if __name__ == "__main__":
    main()
