"""OCR recall on toy-world scenes: tiled high-resolution reading against one downscaled 336 px view
(what a single-tile model sees) and against the whole full-resolution image read in one pass.

python benchmarks/ocr_recall.py --n 40 --preset ocr --seed 1000 --out benchmarks/results/ocr_recall.json

A ground-truth string counts as found when an OCR line whose box touches the string's box contains
it after normalisation (case, spaces and brackets ignored). Also measures the cheap `has_text` check
(one untiled read at 512 px, a smaller image at twice its size) against an edge-density heuristic, on scenes with and without text.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from assistant.ocr import OCRLine, OCRReader, normalize_text
from assistant.ocr.geometry import intersection
from assistant.toyworld import PRESETS, TextGT, generate_scene, render

BASE_SIDE = 336
BUCKETS = ((0, 8, "<=8 px"), (9, 12, "10-12 px"), (13, 20, "14-20 px"), (21, 999, ">=24 px"))


def bucket(font_px: int) -> str:
    return next(label for lo, hi, label in BUCKETS if lo <= font_px <= hi)


def found(gt: TextGT, lines: list[OCRLine] | tuple[OCRLine, ...], margin: int = 4) -> bool:
    x0, y0, x1, y1 = gt.box
    near = (x0 - margin, y0 - margin, x1 + margin, y1 + margin)
    want = normalize_text(gt.text)
    return any(intersection(near, ln.box) > 0 and want in normalize_text(ln.text) for ln in lines)


def read_downscaled(reader: OCRReader, image: Image.Image) -> list[OCRLine]:
    """One pass over the image downscaled to 336 px on its longer side, boxes scaled back."""
    small = image.copy()
    small.thumbnail((BASE_SIDE, BASE_SIDE), Image.Resampling.BICUBIC)
    sx, sy = image.width / small.width, image.height / small.height
    return [
        OCRLine(
            ln.text,
            (int(ln.box[0] * sx), int(ln.box[1] * sy), int(ln.box[2] * sx) + 1, int(ln.box[3] * sy) + 1),
        )
        for ln in reader.engine.detect_and_read(small)
    ]


def edge_density(image: Image.Image) -> float:
    """Share of strong-edge pixels in the grey image downscaled to 336 px: the heuristic alternative."""
    small = image.convert("L")
    small.thumbnail((BASE_SIDE, BASE_SIDE))
    edges = np.asarray(small.filter(ImageFilter.FIND_EDGES), dtype=np.float32)
    return float((edges > 96).mean())


def measure_recall(reader: OCRReader, seeds: list[int], preset: str) -> dict:
    methods = ("downscaled_336", "full_image", "tiled")
    hits: dict[str, dict[str, list[int]]] = {m: defaultdict(lambda: [0, 0]) for m in methods}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    images = 0
    for seed in seeds:
        scene = generate_scene(seed, PRESETS[preset])
        if not scene.texts:
            continue
        images += 1
        image = render(scene)
        runs = {
            "downscaled_336": lambda im=image: read_downscaled(reader, im),
            "full_image": lambda im=image: reader.engine.detect_and_read(im),
            "tiled": lambda im=image: list(reader.read(im).lines),
        }
        for method, run in runs.items():
            start = time.perf_counter()
            lines = run()
            seconds[method] += time.perf_counter() - start
            for gt in scene.texts:
                for key in (bucket(gt.font_px), "all"):
                    hits[method][key][0] += found(gt, lines)
                    hits[method][key][1] += 1
        logging.info("seed %d: %d texts", seed, len(scene.texts))
    keys = [label for _, _, label in BUCKETS] + ["all"]
    recall = {
        m: {k: (hits[m][k][0] / hits[m][k][1] if hits[m][k][1] else None) for k in keys} for m in methods
    }
    counts = {k: hits["tiled"][k][1] for k in keys}
    per_image = {m: seconds[m] / max(1, images) for m in methods}
    return {"images": images, "texts": counts, "recall": recall, "seconds_per_image": per_image}


def measure_check(reader: OCRReader, seeds: list[int], preset: str) -> dict:
    rows = []
    for seed in seeds:
        scene = generate_scene(seed, PRESETS[preset])
        image = render(scene)
        start = time.perf_counter()
        detected = reader.has_text(image)
        t_det = time.perf_counter() - start
        start = time.perf_counter()
        density = edge_density(image)
        t_edge = time.perf_counter() - start
        rows.append((bool(scene.texts), detected, density, t_det, t_edge))
    truth = np.array([r[0] for r in rows])
    det = np.array([r[1] for r in rows])
    dens = np.array([r[2] for r in rows])
    # the heuristic gets its best threshold chosen on the same images: an upper bound on its accuracy
    best_acc, best_thr = max((float(((dens > t) == truth).mean()), float(t)) for t in np.unique(dens))
    return {
        "images": len(rows),
        "with_text": int(truth.sum()),
        "edge_density_with_text": sorted(round(float(v), 4) for v in dens[truth]),
        "edge_density_without_text": sorted(round(float(v), 4) for v in dens[~truth]),
        "detector": {
            "accuracy": float((det == truth).mean()),
            "recall": float(det[truth].mean()) if truth.any() else None,
            "false_positive_rate": float(det[~truth].mean()) if (~truth).any() else None,
            "seconds_per_image": float(np.mean([r[3] for r in rows])),
        },
        "edge_density_best_threshold": {
            "accuracy": best_acc,
            "threshold": best_thr,
            "seconds_per_image": float(np.mean([r[4] for r in rows])),
        },
    }


def print_report(report: dict) -> None:
    r = report["recall"]
    keys = list(report["texts"])
    print(f"OCR recall, preset {report['preset']!r}, {report['recall_images']} images with text")
    print(
        f"{'font':>10} {'texts':>6} {'336px':>7} {'full':>7} {'tiled':>7} {'tiled/336':>10} {'tiled/full':>11}"
    )
    for k in keys:
        a, b, c = r["downscaled_336"][k], r["full_image"][k], r["tiled"][k]
        if c is None:
            continue
        ratio_a = f"{c / a:.2f}x" if a else "inf"
        ratio_b = f"{c / b:.2f}x" if b else "inf"
        print(f"{k:>10} {report['texts'][k]:>6} {a:>7.2f} {b:>7.2f} {c:>7.2f} {ratio_a:>10} {ratio_b:>11}")
    s = report["seconds_per_image"]
    print(
        f"seconds/image: 336px {s['downscaled_336']:.2f}, full {s['full_image']:.2f}, tiled {s['tiled']:.2f} "
        f"({s['tiled'] / s['downscaled_336']:.1f}x the 336px pass)"
    )
    c = report["has_text_check"]
    d, e = c["detector"], c["edge_density_best_threshold"]
    print(
        f"has_text on {c['images']} images ({c['with_text']} with text): has_text accuracy {d['accuracy']:.2f} "
        f"(recall {d['recall']:.2f}, false positives {d['false_positive_rate']:.2f}, {d['seconds_per_image']:.3f}s); "
        f"edge density at its best threshold {e['accuracy']:.2f} ({e['seconds_per_image']:.3f}s)"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", type=int, default=40, help="Scenes to generate (those without text are skipped)."
    )
    parser.add_argument("--preset", default="ocr", choices=sorted(PRESETS), help="Toy-world preset.")
    parser.add_argument("--seed", type=int, default=1000, help="First scene seed.")
    parser.add_argument("--check-n", type=int, default=40, help="Scenes for the has_text check.")
    parser.add_argument(
        "--check-preset", default="standard", choices=sorted(PRESETS), help="Preset of the has_text check."
    )
    parser.add_argument("--tile-size", type=int, default=None, help="Override OCRConfig.tile_size.")
    parser.add_argument("--overlap", type=int, default=None, help="Override OCRConfig.overlap.")
    parser.add_argument("--no-full-pass", action="store_true", help="Tiles only, no whole-image pass.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ocr_recall.json"))
    args = parser.parse_args(argv)
    if args.n < 1 or args.check_n < 1:
        parser.error("--n and --check-n must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {"cache_size": 0}
    if args.tile_size is not None:
        overrides["tile_size"] = args.tile_size
    if args.overlap is not None:
        overrides["overlap"] = args.overlap
    if args.no_full_pass:
        overrides["full_pass"] = False
    reader = OCRReader("rapidocr", **overrides)
    seeds = list(range(args.seed, args.seed + args.n))
    recall = measure_recall(reader, seeds, args.preset)
    check_seeds = list(range(args.seed, args.seed + args.check_n))
    report = {
        "preset": args.preset,
        "seed": args.seed,
        "n": args.n,
        "config": asdict(reader.config),
        "recall_images": recall.pop("images"),
        **recall,
        "has_text_check": {
            "preset": args.check_preset,
            **measure_check(reader, check_seeds, args.check_preset),
        },
    }
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
