"""What an OCR read returns: lines of text with their boxes in image pixels, and the whole result."""

from __future__ import annotations

from dataclasses import dataclass

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in image pixels, x1 and y1 exclusive


@dataclass(frozen=True)
class OCRLine:
    text: str
    box: Box
    score: float = 1.0

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]


@dataclass(frozen=True)
class OCRResult:
    """`text` is the lines in reading order joined by newlines; `seconds` is the time spent reading."""

    text: str
    lines: tuple[OCRLine, ...]
    seconds: float
    cached: bool = False

    @classmethod
    def from_lines(cls, lines: tuple[OCRLine, ...], seconds: float) -> OCRResult:
        return cls("\n".join(line.text for line in lines), lines, seconds)
