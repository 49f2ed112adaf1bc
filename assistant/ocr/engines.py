"""OCR engines behind one small protocol, and the registry that names them.

An engine reads one image (a tile) and returns its lines with boxes in that image's pixels. Engines are
built lazily (rapidocr loads three ONNX models) and guarded by a lock, so one engine can be shared by
several threads.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from assistant.errors import AssistantError
from assistant.threads import env_threads

from .types import OCRLine

logger = logging.getLogger(__name__)


class OCRError(AssistantError):
    """An OCR engine is unknown, not installed, or failed on an image."""


@runtime_checkable
class OCREngine(Protocol):
    name: str

    def detect_and_read(self, image: Image.Image) -> list[OCRLine]:
        """Every text line in `image`, with boxes in its pixels; blocking and thread-safe."""
        ...

    def detect(self, image: Image.Image, side: int) -> int:
        """How many text lines `image` holds, the detector run at about `side` px (the cheap has_text check)."""
        ...


def _box_from_points(points: Any, width: int, height: int) -> tuple[int, int, int, int]:
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    x0, y0 = max(0, int(min(xs))), max(0, int(min(ys)))
    x1, y1 = min(width, int(round(max(xs)))), min(height, int(round(max(ys))))
    return (x0, y0, max(x0 + 1, x1), max(y0 + 1, y1))


def _readable(text: str) -> bool:
    """A letter or digit in it: a recognised line of only symbols ("■", "-") is a shape, not text."""
    return any(ch.isalnum() for ch in text)


class RapidOCREngine:
    """PP-OCRv4 detection + recognition through rapidocr-onnxruntime (its wheel ships the models)."""

    name = "rapidocr"

    def __init__(self, min_score: float = 0.5, threads: int | None = None) -> None:
        """`threads`: onnxruntime's intra- and inter-op threads; None: OMP_NUM_THREADS where it is set (a
        recipe run at one thread per job must not start an OCR pass on every core), else onnxruntime's
        default (-1)."""
        self.min_score = min_score
        self.threads = threads if threads is not None else (env_threads() or -1)
        self._ocr: Any = None
        self._lock = threading.Lock()

    def _engine(self) -> Any:
        if self._ocr is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise OCRError(
                    "the rapidocr engine needs rapidocr-onnxruntime; run `pip install rapidocr-onnxruntime`"
                ) from exc
            logger.info("loading rapidocr-onnxruntime models (threads=%s)", self.threads)
            self._ocr = RapidOCR(
                text_score=self.min_score,
                intra_op_num_threads=self.threads,
                inter_op_num_threads=self.threads,
            )
        return self._ocr

    def detect_and_read(self, image: Image.Image) -> list[OCRLine]:
        rgb = image.convert("RGB")
        with self._lock:
            result, _ = self._engine()(rgb)
        lines = []
        for points, text, score in result or []:
            text = str(text).strip()
            if text and float(score) >= self.min_score:
                lines.append(OCRLine(text, _box_from_points(points, *rgb.size), round(float(score), 4)))
        return lines

    def detect(self, image: Image.Image, side: int) -> int:
        """Lines read (detector + recogniser, scores >= `min_score`) with the detector run at `side` px.

        Recognition is cheap next to detection and drops most of the shapes and clutter that the detector
        alone takes for text (false positives on toy-world scenes without text: 36% -> 18%), and a line counts
        only with a letter or digit in it (a red square upscaled is read as "■").
        """
        rgb = image.convert("RGB")
        with self._lock:
            detector = self._engine().text_det
            default_side = detector.limit_side_len
            detector.limit_side_len = side  # shorter side the detector resizes to; read on every call
            try:
                result, _ = self._engine()(rgb)
            finally:
                detector.limit_side_len = default_side
        return sum(
            1 for _, text, score in result or [] if _readable(str(text)) and float(score) >= self.min_score
        )


class TesseractEngine:
    """Tesseract through pytesseract (optional: needs the `tesseract` binary and `pip install pytesseract`)."""

    name = "tesseract"

    def __init__(self, min_score: float = 0.5, lang: str = "eng") -> None:
        self.min_score = min_score
        self.lang = lang
        self._lock = threading.Lock()
        self._module: Any = None

    def _pytesseract(self) -> Any:
        if self._module is None:
            try:
                import pytesseract
            except ImportError as exc:
                raise OCRError(
                    "the tesseract engine needs pytesseract; run `pip install pytesseract`, "
                    "or use engine='rapidocr'"
                ) from exc
            if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
                raise OCRError(
                    "the tesseract engine needs the tesseract binary; install it "
                    "(`apt-get install tesseract-ocr tesseract-ocr-eng`) or use engine='rapidocr'"
                )
            self._module = pytesseract
        return self._module

    def detect_and_read(self, image: Image.Image) -> list[OCRLine]:
        pt = self._pytesseract()
        with self._lock:
            data = pt.image_to_data(image.convert("RGB"), lang=self.lang, output_type=pt.Output.DICT)
        words: dict[tuple[int, int, int], list[tuple[str, tuple[int, int, int, int], float]]] = {}
        for i, word in enumerate(data["text"]):
            conf = float(data["conf"][i])
            if not str(word).strip() or conf < 100 * self.min_score:
                continue
            key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
            x, y, w, h = data["left"][i], data["top"][i], data["width"][i], data["height"][i]
            words.setdefault(key, []).append((str(word).strip(), (x, y, x + w, y + h), conf / 100))
        lines = []
        for members in words.values():
            boxes = [b for _, b, _ in members]
            box = (
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            )
            text = " ".join(t for t, _, _ in members)
            lines.append(OCRLine(text, box, round(min(s for _, _, s in members), 4)))
        return lines

    def detect(self, image: Image.Image, side: int) -> int:
        return len(self.detect_and_read(image))


OCR_ENGINES: dict[str, Callable[..., OCREngine]] = {
    "rapidocr": RapidOCREngine,
    "tesseract": TesseractEngine,
}


def get_engine(name: str, **kwargs: Any) -> OCREngine:
    if name not in OCR_ENGINES:
        raise OCRError(f"unknown OCR engine {name!r}; choose from {sorted(OCR_ENGINES)}")
    return OCR_ENGINES[name](**kwargs)
