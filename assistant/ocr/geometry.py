"""Pure functions over boxes and texts: sliding-window tiles, seam de-duplication, reading order."""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher

from .types import Box, OCRLine

_NOT_TEXT = re.compile(r"[^0-9a-z$.,%:/-]+")


def tile_grid(width: int, height: int, tile_size: int, overlap: int) -> list[Box]:
    """Overlapping `tile_size` windows covering a `width` x `height` image, row by row.

    Windows step by `tile_size - overlap`; the last window of a row or column is flush with the image
    edge, so every pixel is covered and every seam is overlapped by at least `overlap` pixels.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image must be at least 1x1, got {width}x{height}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile_size, got {overlap} and {tile_size}")
    xs, ys = _starts(width, tile_size, overlap), _starts(height, tile_size, overlap)
    return [(x, y, min(x + tile_size, width), min(y + tile_size, height)) for y in ys for x in xs]


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def intersection(a: Box, b: Box) -> int:
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Box, b: Box) -> float:
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def containment(a: Box, b: Box) -> float:
    """Share of the smaller box that lies inside the other one (1.0 when one holds the other)."""
    smaller = min(area(a), area(b))
    return intersection(a, b) / smaller if smaller > 0 else 0.0


def vertical_overlap(a: Box, b: Box) -> float:
    """Overlap of the two boxes' vertical extents, as a share of the shorter one's height."""
    inter = min(a[3], b[3]) - max(a[1], b[1])
    shorter = min(a[3] - a[1], b[3] - b[1])
    return max(0, inter) / shorter if shorter > 0 else 0.0


def normalize_text(text: str) -> str:
    """Case-folded, accents and spaces removed, punctuation other than `$ . , % : / -` dropped."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NOT_TEXT.sub("", text.casefold())


def text_similarity(a: str, b: str) -> float:
    """How alike two texts are, 0 to 1, counting a piece cut at a tile edge as a match of the whole.

    1.0 when one normalised text contains the other; otherwise the best match ratio of the shorter text
    against the whole longer one, its prefix or its suffix of the same length (a cut piece is often
    misread at its cut end: "PAP" for the left of "PARKING").
    """
    na, nb = normalize_text(a), normalize_text(b)
    if not na or not nb:
        return 0.0
    if na in nb or nb in na:
        return 1.0
    short, long = sorted((na, nb), key=len)
    candidates = (long, long[: len(short)], long[-len(short) :])
    return max(SequenceMatcher(None, short, c).ratio() for c in candidates)


def _suffix_prefix(a: str, b: str, min_chars: int) -> int:
    """Length of the longest suffix of `a` that is a prefix of `b`, if at least `min_chars` long."""
    for k in range(min(len(a), len(b)) - 1, min_chars - 1, -1):
        if a.endswith(b[:k]):
            return k
    return 0


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _same_line(a: OCRLine, b: OCRLine, min_iou: float, min_containment: float, min_similarity: float) -> bool:
    if iou(a.box, b.box) < min_iou and containment(a.box, b.box) < min_containment:
        return False
    return text_similarity(a.text, b.text) >= min_similarity


def _stitch(left: OCRLine, right: OCRLine, min_chars: int) -> OCRLine | None:
    """`"NO EN"` + `"ENTRY"` -> `"NO ENTRY"`: two pieces of one line that both cross a seam."""
    if left.box[0] > right.box[0]:
        left, right = right, left
    if vertical_overlap(left.box, right.box) < 0.6 or intersection(left.box, right.box) == 0:
        return None
    k = _suffix_prefix(left.text, right.text, min_chars)
    if k == 0:
        return None
    return OCRLine(left.text + right.text[k:], _union(left.box, right.box), min(left.score, right.score))


def merge_duplicates(
    lines: list[OCRLine],
    min_iou: float = 0.3,
    min_containment: float = 0.6,
    min_similarity: float = 0.6,
    min_stitch_chars: int = 2,
) -> list[OCRLine]:
    """Drop detections of one line seen by two overlapping tiles, and stitch lines cut by a seam.

    Two lines are the same when their boxes overlap (IoU >= `min_iou`, or the smaller box lies
    `min_containment` inside the other) and their texts agree (`text_similarity` >= `min_similarity`).
    Of a duplicate pair the longer text wins (the other is usually a piece cut at a tile edge), then the
    higher score. Overlapping boxes on one row whose texts share a suffix/prefix of at least
    `min_stitch_chars` characters are stitched into one line.
    """
    ordered = sorted(lines, key=lambda ln: (-len(normalize_text(ln.text)), -ln.score, ln.box))
    kept: list[OCRLine] = []
    for line in ordered:
        if not normalize_text(line.text):
            continue
        for i, other in enumerate(kept):
            if _same_line(line, other, min_iou, min_containment, min_similarity):
                kept[i] = OCRLine(other.text, _union(other.box, line.box), max(other.score, line.score))
                break
            stitched = _stitch(other, line, min_stitch_chars)
            if stitched is not None:
                kept[i] = stitched
                break
        else:
            kept.append(line)
    return kept


def reading_order(lines: list[OCRLine], min_row_overlap: float = 0.5) -> list[OCRLine]:
    """Lines grouped into rows (top to bottom), each row read left to right.

    A line joins a row when its vertical extent overlaps the row's by at least `min_row_overlap` of
    the shorter height; rows are ordered by their top edge.
    """
    rows: list[tuple[Box, list[OCRLine]]] = []
    for line in sorted(lines, key=lambda ln: ((ln.box[1] + ln.box[3]) / 2, ln.box[0])):
        for i, (span, members) in enumerate(rows):
            if vertical_overlap(span, line.box) >= min_row_overlap:
                members.append(line)
                rows[i] = (_union(span, line.box), members)
                break
        else:
            rows.append((line.box, [line]))
    rows.sort(key=lambda row: (row[0][1], row[0][0]))
    return [line for _, members in rows for line in sorted(members, key=lambda ln: (ln.box[0], ln.box[1]))]
