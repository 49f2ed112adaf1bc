"""OCR-aware high resolution, the service half: read text over overlapping tiles and hint the model.

from assistant.ocr import OCRReader, format_hint
reader = OCRReader(engine="rapidocr")
hint = format_hint(reader.read(image)) if reader.has_text(image) else ""
"""

from .cache import LRUCache, image_hash
from .engines import OCR_ENGINES, OCREngine, OCRError, RapidOCREngine, TesseractEngine, get_engine
from .geometry import merge_duplicates, normalize_text, reading_order, text_similarity, tile_grid
from .hint import HINT_PREFIX, format_hint, insert_hint
from .reader import OCRConfig, OCRReader
from .types import OCRLine, OCRResult

__all__ = [
    "HINT_PREFIX",
    "OCR_ENGINES",
    "LRUCache",
    "OCRConfig",
    "OCREngine",
    "OCRError",
    "OCRLine",
    "OCRReader",
    "OCRResult",
    "RapidOCREngine",
    "TesseractEngine",
    "format_hint",
    "get_engine",
    "image_hash",
    "insert_hint",
    "merge_duplicates",
    "normalize_text",
    "reading_order",
    "text_similarity",
    "tile_grid",
]
