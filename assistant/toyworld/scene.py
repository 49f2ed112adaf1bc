"""Scenes with full ground truth, and the configurations (presets) that generate them.

Boxes are `(x0, y0, x1, y1)` in pixels with `x1`, `y1` exclusive, so the width is `x1 - x0`.
A `Scene` holds everything `render` needs: the same scene always renders to the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .vocab import COLORS, SHAPES, SIZES, TEXT_KINDS

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]


def _box(v: Any) -> Box:
    x0, y0, x1, y1 = (int(c) for c in v)
    return (x0, y0, x1, y1)


def _rgb(v: Any) -> RGB:
    r, g, b = (int(c) for c in v)
    return (r, g, b)


@dataclass(frozen=True)
class ObjectGT:
    shape: str
    color: str
    size: str  # small | medium | large, relative to the config's object size range
    box: Box

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    @property
    def area(self) -> int:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)

    @property
    def rgb(self) -> RGB:
        return COLORS[self.color]

    @property
    def name(self) -> str:
        """`"red circle"`."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class TextGT:
    text: str
    box: Box  # the ink's bounding box
    font_px: int
    kind: str = "word"  # sign | word | price | number
    origin: tuple[int, int] = (0, 0)  # where the text is drawn (PIL's anchor "la")
    color: RGB = (15, 15, 15)
    plate: bool = False  # drawn on a light rounded sign plate


@dataclass(frozen=True)
class Clutter:
    """A thin line (`xy` = x0, y0, x1, y1) or a dot (`xy` = cx, cy, r, r); never an object."""

    kind: str  # line | dot
    xy: Box
    color: RGB
    width: int = 1


@dataclass(frozen=True)
class Background:
    kind: str  # plain | gradient | noise
    color: RGB
    color2: RGB = (255, 255, 255)
    direction: str = "vertical"  # vertical | horizontal | diagonal (gradients)
    noise_seed: int = 0
    noise_amp: int = 0
    clutter: tuple[Clutter, ...] = ()


@dataclass(frozen=True)
class Scene:
    seed: int
    width: int
    height: int
    background: Background
    objects: tuple[ObjectGT, ...] = ()
    texts: tuple[TextGT, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        bg = self.background
        return {
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "background": {
                "kind": bg.kind,
                "color": list(bg.color),
                "color2": list(bg.color2),
                "direction": bg.direction,
                "noise_seed": bg.noise_seed,
                "noise_amp": bg.noise_amp,
                "clutter": [
                    {"kind": c.kind, "xy": list(c.xy), "color": list(c.color), "width": c.width}
                    for c in bg.clutter
                ],
            },
            "objects": [
                {"shape": o.shape, "color": o.color, "size": o.size, "box": list(o.box)} for o in self.objects
            ],
            "texts": [
                {
                    "text": t.text,
                    "box": list(t.box),
                    "font_px": t.font_px,
                    "kind": t.kind,
                    "origin": list(t.origin),
                    "color": list(t.color),
                    "plate": t.plate,
                }
                for t in self.texts
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        bg = d["background"]
        clutter = tuple(
            Clutter(c["kind"], _box(c["xy"]), _rgb(c["color"]), int(c["width"])) for c in bg["clutter"]
        )
        background = Background(
            kind=bg["kind"],
            color=_rgb(bg["color"]),
            color2=_rgb(bg["color2"]),
            direction=bg["direction"],
            noise_seed=int(bg["noise_seed"]),
            noise_amp=int(bg["noise_amp"]),
            clutter=clutter,
        )
        objects = tuple(ObjectGT(o["shape"], o["color"], o["size"], _box(o["box"])) for o in d["objects"])
        texts = tuple(
            TextGT(
                text=t["text"],
                box=_box(t["box"]),
                font_px=int(t["font_px"]),
                kind=t["kind"],
                origin=(int(t["origin"][0]), int(t["origin"][1])),
                color=_rgb(t["color"]),
                plate=bool(t["plate"]),
            )
            for t in d["texts"]
        )
        return cls(int(d["seed"]), int(d["width"]), int(d["height"]), background, objects, texts)


@dataclass(frozen=True)
class SceneConfig:
    """What kind of scenes to generate. Ranges are inclusive."""

    sizes: tuple[tuple[int, int], ...] = field(
        default=((128, 128),), metadata={"help": "Image (width, height) choices."}
    )
    object_px: tuple[int, int] = field(default=(28, 48), metadata={"help": "Object side length range, px."})
    count: tuple[int, int] = field(default=(0, 6), metadata={"help": "Objects per scene, uniform."})
    text_prob: float = field(default=0.0, metadata={"help": "Probability that a scene has printed text."})
    text_count: tuple[int, int] = field(
        default=(1, 1), metadata={"help": "Texts per scene when it has text."}
    )
    font_px: tuple[int, ...] = field(default=(20,), metadata={"help": "Font size choices, px."})
    text_kinds: tuple[str, ...] = field(
        default=tuple(TEXT_KINDS), metadata={"help": "Kinds of printed text."}
    )
    short_text_only: bool = field(default=False, metadata={"help": "Only texts of at most 4 characters."})
    clutter: bool = field(default=True, metadata={"help": "Thin lines and dots that are not objects."})
    backgrounds: tuple[str, ...] = field(default=("plain", "gradient", "noise"))
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(COLORS)
    gap: int = field(default=3, metadata={"help": "Minimum free pixels between objects and texts."})

    def __post_init__(self) -> None:
        lo, hi = self.object_px
        if not 8 <= lo <= hi:
            raise ValueError(f"object_px must satisfy 8 <= min <= max, got {self.object_px}")
        if not 0 <= self.count[0] <= self.count[1]:
            raise ValueError(f"count must satisfy 0 <= min <= max, got {self.count}")
        if not self.sizes or any(w < hi + 2 * self.gap or h < hi + 2 * self.gap for w, h in self.sizes):
            raise ValueError(f"every image size must fit the largest object ({hi} px), got {self.sizes}")
        min_area = min(w * h for w, h in self.sizes)
        if self.count[1] * (lo + self.gap) ** 2 > 0.4 * min_area:
            raise ValueError(
                f"{self.count[1]} objects of {lo} px cannot be placed reliably in {min_area} px^2; "
                "lower count or object_px"
            )
        if not 0.0 <= self.text_prob <= 1.0:
            raise ValueError(f"text_prob must be in [0, 1], got {self.text_prob}")
        if self.text_prob > 0 and (not self.font_px or min(self.font_px) < 4):
            raise ValueError(f"font_px needs sizes >= 4 px when text is on, got {self.font_px}")
        unknown = [k for k in self.text_kinds if k not in TEXT_KINDS]
        if unknown:
            raise ValueError(f"unknown text kinds {unknown}; choose from {sorted(TEXT_KINDS)}")
        if any(s not in SHAPES for s in self.shapes) or any(c not in COLORS for c in self.colors):
            raise ValueError(f"shapes must come from {list(SHAPES)} and colors from {list(COLORS)}")

    def size_label(self, px: int) -> str:
        """Small / medium / large: the third of `object_px` that `px` falls in."""
        lo, hi = self.object_px
        k = (px - lo) * 3 // (hi - lo + 1)
        return SIZES[min(2, max(0, k))]

    def size_range(self, label: str) -> tuple[int, int]:
        lo, hi = self.object_px
        k = SIZES.index(label)
        a = lo + (hi - lo + 1) * k // 3
        b = lo + (hi - lo + 1) * (k + 1) // 3 - 1
        return a, max(a, b)


PRESETS: dict[str, SceneConfig] = {
    # What the embedded small model trains on: 128 px, big objects (>= 2 x 2 patches of 16 px at
    # a 64 px tile of the full image), at most one big short word.
    "tiny": SceneConfig(
        sizes=((128, 128),),
        object_px=(28, 48),
        count=(0, 6),
        text_prob=0.2,
        text_count=(1, 1),
        font_px=(20, 24),
        short_text_only=True,
    ),
    # Several sizes and aspect ratios; text from tiny (unreadable at one 336 px tile) to large.
    "standard": SceneConfig(
        sizes=(
            (336, 336),
            (448, 448),
            (512, 512),
            (768, 768),
            (640, 480),
            (480, 640),
            (768, 512),
            (512, 768),
            (768, 432),
            (432, 768),
            (768, 336),
        ),
        object_px=(24, 128),
        count=(0, 8),
        text_prob=0.7,
        text_count=(1, 4),
        font_px=(6, 8, 10, 12, 16, 20, 28, 40),
    ),
    # Text-heavy: signs, prices and words at several sizes, few objects.
    "ocr": SceneConfig(
        sizes=((336, 336), (512, 512), (640, 480), (768, 512), (512, 768)),
        object_px=(24, 80),
        count=(0, 2),
        text_prob=1.0,
        text_count=(2, 6),
        font_px=(8, 10, 12, 14, 18, 24, 32, 48),
    ),
}


def get_preset(name: str) -> SceneConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
