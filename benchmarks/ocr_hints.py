"""The recipe's data step, OCR hints read over several processes, against one process in the same run.

    python -m benchmarks.ocr_hints                     # ~4 minutes on 2 idle cores; results/ocr_hints.json
    python -m benchmarks.ocr_hints --workers 1 2 --n 2000
    python -m benchmarks.ocr_hints --quick             # seconds, exercises every path

Conditions: `training.ocr_hints.add_ocr_hints` at each `--workers` count (one single-threaded onnxruntime engine per
process) on a fresh copy of the same `--n` conversations of the recipe's stage-2 task at its share (0.5), interleaved
over `--repeats`; process start-up is counted. Beside them, `threaded`: one process whose engine takes
onnxruntime's own thread count (every core; what the data step did before session 30 where OMP_NUM_THREADS was
unset). The ratio divides each condition's median images/s by the first count's. The conversations written must be
byte-identical across counts (checked: the benchmark fails otherwise; `threaded` is reported as same or not).
Meaningful on an idle machine only: the recipe takes only the CPUs idle when its data step starts (`choose_workers`).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import RESULTS, machine, parse_bench_args, run_cli, write_json

log = logging.getLogger("benchmarks.ocr_hints")


@dataclass
class OcrHintsBenchArgs:
    task: str = field(default="instruct", metadata={"help": "Toy-world task (the recipe's stage-2 data)."})
    n: int = field(
        default=2000, metadata={"help": "Scenes generated (a fifth carry text on the tiny preset)."}
    )
    share: float = field(
        default=0.5, metadata={"help": "Share of the conversations with text hinted (the recipe's)."}
    )
    workers: list[int] = field(
        default_factory=lambda: [1, 2], metadata={"help": "Process counts to compare."}
    )
    repeats: int = field(default=2, metadata={"help": "Measurements per count, interleaved."})
    seed: int = field(default=0, metadata={"help": "Seed of the data."})
    out: str = field(default=str(RESULTS / "ocr_hints.json"), metadata={"help": "JSON results path."})

    def __post_init__(self) -> None:
        if self.n < 1 or self.repeats < 1:
            raise ValueError(f"--n and --repeats must be >= 1, got {self.n} and {self.repeats}")
        if not self.workers or min(self.workers) < 1:
            raise ValueError(f"--workers must be positive counts, got {self.workers}")


QUICK = dict(n=40, repeats=1, share=1.0)


def main(args: OcrHintsBenchArgs) -> dict:
    from assistant.ocr import OCRReader
    from assistant.ocr.engines import RapidOCREngine
    from assistant.toyworld import make_dataset
    from training.ocr_hints import add_ocr_hints

    conditions: list[int | str] = [*args.workers, "threaded"]
    rates: dict[int | str, list[float]] = {c: [] for c in conditions}
    written: dict[int | str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ocr-hints-") as tmp:
        work = Path(tmp)
        source = make_dataset(work / "source", task=args.task, n=args.n, seed=20_000_000 + args.seed)
        counts = {}
        for repeat in range(args.repeats):
            for condition in conditions:
                data = work / f"{condition}-{repeat}"
                shutil.copytree(source, data)
                start = time.perf_counter()
                if condition == "threaded":
                    reader = OCRReader(engine=RapidOCREngine(threads=-1))
                    counts = add_ocr_hints(data, args.share, seed=args.seed, reader=reader)
                else:
                    counts = add_ocr_hints(data, args.share, seed=args.seed, workers=int(condition))
                seconds = time.perf_counter() - start
                images = counts["hinted"] + counts["empty_reads"]
                rates[condition].append(images / seconds)
                log.info(
                    "%s process(es), repeat %d: %d images in %.1f s", condition, repeat + 1, images, seconds
                )
                text = (data / "messages.jsonl").read_text()
                written.setdefault(condition, text)
                if condition != "threaded" and written[args.workers[0]] != text:
                    raise RuntimeError(
                        f"the hints written by {condition} process(es) differ from the first count's"
                    )
                shutil.rmtree(data)
    base = statistics.median(rates[args.workers[0]])
    rows = [
        {
            "workers": c,
            "images_per_s": statistics.median(rates[c]),
            "all": rates[c],
            "ratio_to_baseline": statistics.median(rates[c]) / base,
            "same_hints": written[c] == written[args.workers[0]],
        }
        for c in conditions
    ]
    report = {
        "benchmark": "ocr_hints",
        "args": asdict(args),
        "machine": machine(),
        "counts": counts,
        "baseline": f"{args.workers[0]} process(es)",
        "rows": rows,
    }
    lines = [f"{'processes':>9}{'images/s':>10}{'x baseline':>12}{'same hints':>12}"] + [
        f"{r['workers']:>9}{r['images_per_s']:>10.2f}{r['ratio_to_baseline']:>12.2f}{r['same_hints']!s:>12}"
        for r in rows
    ]
    log.info("OCR hints (%s, %d scenes, %s):\n%s", args.task, args.n, counts, "\n".join(lines))
    write_json(args.out, report)
    return report


def parse_args(argv: list[str] | None = None) -> OcrHintsBenchArgs:
    return parse_bench_args(
        OcrHintsBenchArgs, "OCR hints over several processes, against one, same run.", QUICK, argv
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, parse_args()))
