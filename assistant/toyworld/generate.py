"""`generate_scene(seed, config)`: a pure function from a seed to a scene with ground truth.

Only `random.Random(seed)` is used, so the same seed and config give the same scene everywhere.
Objects are square-boxed and never overlap each other or any text (with `config.gap` px between).
"""

from __future__ import annotations

import random
from functools import lru_cache

from PIL import ImageFont

from .scene import RGB, Background, Box, Clutter, ObjectGT, Scene, SceneConfig, TextGT
from .vocab import SHORT_TEXTS, SIZES, TEXT_COLORS, TEXT_KINDS

_TRIES_PER_OBJECT = 60
_RESTARTS = 50
_TEXT_TRIES = 40


@lru_cache(maxsize=64)
def font(px: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled FreeType font at `px` pixels (no font file needed)."""
    f = ImageFont.load_default(size=px)
    assert isinstance(f, ImageFont.FreeTypeFont), "Pillow was built without FreeType"
    return f


def plate_pad(font_px: int) -> int:
    return max(2, font_px // 4)


def _overlaps(a: Box, b: Box, gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _light_color(rng: random.Random) -> RGB:
    base = rng.randint(218, 248)
    r, g, b = (min(255, base + rng.randint(-12, 6)) for _ in range(3))
    return (r, g, b)


def _background(rng: random.Random, w: int, h: int, config: SceneConfig) -> Background:
    kind = rng.choice(config.backgrounds)
    color, color2 = _light_color(rng), _light_color(rng)
    direction = rng.choice(("vertical", "horizontal", "diagonal"))
    noise_seed = rng.getrandbits(32)
    noise_amp = rng.randint(5, 14) if kind == "noise" else 0
    clutter: list[Clutter] = []
    if config.clutter:
        area = w * h
        for _ in range(rng.randint(0, 2 + area // 40_000)):
            g = rng.randint(120, 190)
            xy = (rng.randrange(w), rng.randrange(h), rng.randrange(w), rng.randrange(h))
            clutter.append(Clutter("line", xy, (g, g, g + rng.randint(0, 15)), 1))
        for _ in range(rng.randint(0, 4 + area // 8_000)):
            g = rng.randint(110, 180)
            r = rng.randint(1, 2)
            clutter.append(Clutter("dot", (rng.randrange(w), rng.randrange(h), r, r), (g, g, g), 1))
    return Background(kind, color, color2, direction, noise_seed, noise_amp, tuple(clutter))


def _place_objects(rng: random.Random, n: int, w: int, h: int, config: SceneConfig) -> list[ObjectGT] | None:
    lo = config.object_px[0]
    gap = config.gap
    placed: list[ObjectGT] = []
    for _ in range(n):
        px = rng.randint(*config.size_range(rng.choice(SIZES)))
        shape, color = rng.choice(config.shapes), rng.choice(config.colors)
        box = None
        while box is None:
            for _ in range(_TRIES_PER_OBJECT):
                x0, y0 = rng.randint(gap, w - px - gap), rng.randint(gap, h - px - gap)
                cand = (x0, y0, x0 + px, y0 + px)
                if not any(_overlaps(cand, o.box, gap) for o in placed):
                    box = cand
                    break
            if box is None:
                if px == lo:
                    return None  # crowded: the caller restarts the layout
                px = max(lo, int(px * 0.85))
        placed.append(ObjectGT(shape, color, config.size_label(px), box))
    return placed


def _text_candidate(rng: random.Random, config: SceneConfig) -> tuple[str, str, int]:
    """(kind, text, font px)."""
    px = rng.choice(config.font_px)
    if config.short_text_only:
        text = rng.choice(SHORT_TEXTS)
        return ("number" if text.isdigit() else "sign"), text, px
    kind = rng.choice(config.text_kinds)
    return kind, rng.choice(TEXT_KINDS[kind]), px


def _place_texts(rng: random.Random, w: int, h: int, config: SceneConfig, taken: list[Box]) -> list[TextGT]:
    texts: list[TextGT] = []
    if config.text_prob <= 0 or rng.random() >= config.text_prob:
        return texts
    for _ in range(rng.randint(*config.text_count)):
        kind, text, px = _text_candidate(rng, config)
        plate = kind == "sign" or (kind == "price" and rng.random() < 0.5)
        color = rng.choice(TEXT_COLORS)
        left, top, right, bottom = font(px).getbbox(text)
        pad = plate_pad(px) if plate else 0
        outer_w, outer_h = right - left + 2 * pad, bottom - top + 2 * pad
        margin = config.gap + 1
        if outer_w > w - 2 * margin or outer_h > h - 2 * margin:
            continue
        for _ in range(_TEXT_TRIES):
            ox = rng.randint(margin, w - outer_w - margin)  # outer box's top left
            oy = rng.randint(margin, h - outer_h - margin)
            outer = (ox, oy, ox + outer_w, oy + outer_h)
            if any(_overlaps(outer, bx, config.gap) for bx in taken):
                continue
            origin = (ox + pad - left, oy + pad - top)
            box = (ox + pad, oy + pad, ox + pad + right - left, oy + pad + bottom - top)
            texts.append(TextGT(text, box, px, kind, origin, color, plate))
            taken.append(outer)
            break
    return texts


def generate_scene(seed: int, config: SceneConfig) -> Scene:
    """The scene for `seed`: size, background, clutter, non-overlapping objects, then texts."""
    rng = random.Random(seed)
    w, h = rng.choice(config.sizes)
    background = _background(rng, w, h, config)
    n = rng.randint(*config.count)
    for _ in range(_RESTARTS):
        objects = _place_objects(rng, n, w, h, config)
        if objects is not None:
            break
    else:
        raise ValueError(f"could not place {n} objects in a {w}x{h} scene (seed {seed}); lower config.count")
    texts = _place_texts(rng, w, h, config, [o.box for o in objects])
    return Scene(seed, w, h, background, tuple(objects), tuple(texts))
