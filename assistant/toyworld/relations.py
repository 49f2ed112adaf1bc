"""Facts read off a scene's ground truth: relations, extremes, counts, regions, reading order.

Relations are only claimed when unambiguous: "left of" needs the boxes fully apart horizontally,
"largest" needs a clear winner. Callers that need a referring expression use `unique_name`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from .scene import ObjectGT, Scene, TextGT
from .vocab import COLOR_NAMES, SHAPES, SIZES

RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
# how descriptions and questions say each relation ("The star is to the left of the circle.")
RELATION_PHRASES: dict[str, str] = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}
REGIONS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
REGION_ORDER: dict[str, int] = {name: i for i, name in enumerate(n for row in REGIONS for n in row)}
CLEAR_RATIO = 1.2  # area ratio for an unambiguous largest / smallest


def relation(a: ObjectGT, b: ObjectGT) -> tuple[str, ...]:
    """Relations of `a` to `b` that hold without doubt: subset of RELATIONS."""
    out = []
    if a.box[2] <= b.box[0]:
        out.append("left")
    if a.box[0] >= b.box[2]:
        out.append("right")
    if a.box[3] <= b.box[1]:
        out.append("above")
    if a.box[1] >= b.box[3]:
        out.append("below")
    return tuple(out)


def is_left_of(a: ObjectGT, b: ObjectGT) -> bool:
    return "left" in relation(a, b)


def is_right_of(a: ObjectGT, b: ObjectGT) -> bool:
    return "right" in relation(a, b)


def is_above(a: ObjectGT, b: ObjectGT) -> bool:
    return "above" in relation(a, b)


def is_below(a: ObjectGT, b: ObjectGT) -> bool:
    return "below" in relation(a, b)


def _extreme(objects: tuple[ObjectGT, ...], largest: bool) -> ObjectGT | None:
    if len(objects) < 2:
        return None
    ranked = sorted(objects, key=lambda o: o.area, reverse=largest)
    first, second = ranked[0].area, ranked[1].area
    clear = first >= second * CLEAR_RATIO if largest else second >= first * CLEAR_RATIO
    return ranked[0] if clear else None


def largest(scene: Scene) -> ObjectGT | None:
    """The clearly largest object (area at least 1.2x the runner-up), or None."""
    return _extreme(scene.objects, largest=True)


def smallest(scene: Scene) -> ObjectGT | None:
    return _extreme(scene.objects, largest=False)


def count(scene: Scene, shape: str | None = None, color: str | None = None) -> int:
    """Objects matching `shape` and `color` (None matches any)."""
    return sum(1 for o in scene.objects if shape in (None, o.shape) and color in (None, o.color))


def counts_by_shape(scene: Scene) -> Counter[str]:
    return Counter(o.shape for o in scene.objects)


def counts_by_color(scene: Scene) -> Counter[str]:
    return Counter(o.color for o in scene.objects)


def counts_by_color_shape(scene: Scene) -> Counter[tuple[str, str]]:
    return Counter((o.color, o.shape) for o in scene.objects)


def unique_name(scene: Scene, obj: ObjectGT) -> str | None:
    """The shortest of "star" / "red star" / "large red star" that names only `obj`, or None."""
    for name, key in (
        (obj.shape, lambda o: o.shape),
        (obj.name, lambda o: (o.color, o.shape)),
        (f"{obj.size} {obj.name}", lambda o: (o.size, o.color, o.shape)),
    ):
        if sum(1 for o in scene.objects if key(o) == key(obj)) == 1:
            return name
    return None


def region(scene: Scene, item: ObjectGT | TextGT) -> str:
    """Which ninth of the image the object's (or text's) centre lies in: "top left", "center", ..."""
    x0, y0, x1, y1 = item.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    col = min(2, int(3 * cx / scene.width))
    row = min(2, int(3 * cy / scene.height))
    return REGIONS[row][col]


def reading_order(texts: tuple[TextGT, ...]) -> list[TextGT]:
    """Top to bottom in lines (centres within half a line height), left to right in a line."""
    ordered = sorted(texts, key=lambda t: (t.box[1] + t.box[3]) / 2)
    lines: list[list[TextGT]] = []
    for t in ordered:
        cy = (t.box[1] + t.box[3]) / 2
        if lines:
            last = lines[-1][0]
            half = max(last.box[3] - last.box[1], t.box[3] - t.box[1]) / 2
            if abs(cy - (last.box[1] + last.box[3]) / 2) <= half:
                lines[-1].append(t)
                continue
        lines.append([t])
    return [t for line in lines for t in sorted(line, key=lambda t: t.box[0])]


def where(region_name: str) -> str:
    """`"center"` -> `"in the center"`, `"left"` -> `"on the left"`, `"top left"` -> `"at the top left"`."""
    if region_name == "center":
        return "in the center"
    if region_name in ("left", "right"):
        return f"on the {region_name}"
    return f"at the {region_name}"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """A description's sentences, each stripped, empty ones left out (a sentence ends at ".", "!" or "?" before
    whitespace)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


_NAME_RE = rf"(?:(?:{'|'.join(SIZES)}) )?(?:(?:{'|'.join(COLOR_NAMES)}) )?(?:{'|'.join(SHAPES)})"
_RELATION_SENTENCE = re.compile(
    rf"\bthe ({_NAME_RE}) is ({'|'.join(RELATION_PHRASES.values())}) the ({_NAME_RE})\b"
)
_PHRASE_RELATION = {phrase: rel for rel, phrase in RELATION_PHRASES.items()}


def layout_objects(layout: Sequence[dict]) -> list[ObjectGT]:
    """Scene objects given as dicts (shape, color, size, box: an RL prompt's `layout`, a scenes.jsonl row's
    `objects`) as ObjectGTs."""
    return [ObjectGT(o["shape"], o["color"], o["size"], tuple(o["box"])) for o in layout]


def resolve(name: str, objects: Sequence[ObjectGT]) -> ObjectGT | None:
    """The one object a referring name ("star", "red star", "large red star") picks out, or None when it names
    none or several."""
    *rest, shape = name.split()
    size = next((w for w in rest if w in SIZES), None)
    color = next((w for w in rest if w not in SIZES), None)
    hits = [
        o
        for o in objects
        if o.shape == shape and (size is None or o.size == size) and (color is None or o.color == color)
    ]
    return hits[0] if len(hits) == 1 else None


def relation_accuracy(text: str, objects: Sequence[ObjectGT]) -> tuple[int, int]:
    """(right, stated) over the relation sentences of a description ("The star is to the left of the red
    circle."): one is right when each name picks out exactly one object of the scene, two different ones, and the
    relation holds without doubt (`relation`, as `describe` writes them)."""
    right = stated = 0
    for a_name, phrase, b_name in _RELATION_SENTENCE.findall(text.lower()):
        stated += 1
        a, b = resolve(a_name, objects), resolve(b_name, objects)
        right += a is not None and b is not None and a is not b and _PHRASE_RELATION[phrase] in relation(a, b)
    return right, stated


_QUOTED = re.compile(r'"([^"]{1,40})"')


def text_accuracy(text: str, texts: Sequence[str]) -> tuple[int, int]:
    """(right, stated) for the text a description says the image shows: each quoted string ('The number "21" is
    written on the right.') is a claim, right when the scene has that text (case and surrounding space ignored)."""
    truth = {t.strip().lower() for t in texts}
    claims = [q.strip().lower() for q in _QUOTED.findall(text)]
    return sum(1 for q in claims if q in truth), len(claims)
