"""`render(scene)`: draw a scene (background, clutter, objects, text) to an RGB image.

Shapes are drawn 4x supersampled into a mask and downsampled, filled with the object's colour and
outlined in a darker shade of it, so that they stay recognisable at 28 px.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

from PIL import Image, ImageChops, ImageDraw

from .generate import font, plate_pad
from .scene import RGB, Background, ObjectGT, Scene, TextGT

_SS = 4  # supersampling factor for shape masks
Points = tuple[tuple[float, float], ...]


def _star(points: int = 5, inner: float = 0.4) -> Points:
    out = []
    for k in range(2 * points):
        r = 0.5 if k % 2 == 0 else 0.5 * inner
        a = -math.pi / 2 + k * math.pi / points
        out.append((0.5 + r * math.cos(a), 0.54 + r * math.sin(a)))
    return tuple(out)


def _hexagon() -> Points:
    return tuple(
        (0.5 + 0.5 * math.cos(k * math.pi / 3), 0.5 + 0.5 * math.sin(k * math.pi / 3)) for k in range(6)
    )


def _heart(n: int = 48) -> Points:
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append(((x + 17) / 34, (12.5 - y) / 30))
    return tuple(pts)


def _cross(arm: float = 0.34) -> Points:
    a, b = 0.5 - arm / 2, 0.5 + arm / 2
    return ((a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a))


@lru_cache(maxsize=1)
def shape_polygons() -> dict[str, Points]:
    """Unit-square outlines of every polygonal shape (the circle is an ellipse)."""
    return {
        "square": ((0.04, 0.04), (0.96, 0.04), (0.96, 0.96), (0.04, 0.96)),
        "triangle": ((0.5, 0.02), (0.99, 0.94), (0.01, 0.94)),
        "star": _star(),
        "diamond": ((0.5, 0.0), (0.84, 0.5), (0.5, 1.0), (0.16, 0.5)),
        "hexagon": _hexagon(),
        "cross": _cross(),
        "heart": _heart(),
    }


@lru_cache(maxsize=512)
def shape_masks(shape: str, px: int) -> tuple[Image.Image, Image.Image]:
    """(fill, outline) "L" masks of `shape` in a `px` x `px` box."""
    s = px * _SS
    line = max(1, round(px / 16)) * _SS
    fill, outline = Image.new("L", (s, s), 0), Image.new("L", (s, s), 0)
    df, do = ImageDraw.Draw(fill), ImageDraw.Draw(outline)
    if shape == "circle":
        df.ellipse((0, 0, s - 1, s - 1), fill=255)
        do.ellipse((0, 0, s - 1, s - 1), outline=255, width=line)
    else:
        pts = [(x * (s - 1), y * (s - 1)) for x, y in shape_polygons()[shape]]
        df.polygon(pts, fill=255)
        do.line([*pts, pts[0]], fill=255, width=line, joint="curve")
        # keep the outline inside the shape so the box stays exact
        outline = Image.composite(outline, Image.new("L", (s, s), 0), fill)
    return fill.resize((px, px), Image.Resampling.BOX), outline.resize((px, px), Image.Resampling.BOX)


def _shade(rgb: RGB, f: float) -> RGB:
    r, g, b = (int(c * f) for c in rgb)
    return (r, g, b)


def _background(bg: Background, w: int, h: int) -> Image.Image:
    if bg.kind == "gradient":
        vertical = Image.linear_gradient("L")  # 256 x 256, dark at the top
        horizontal = vertical.transpose(Image.Transpose.ROTATE_90)
        ramp = {"vertical": vertical, "horizontal": horizontal}.get(
            bg.direction, Image.blend(vertical, horizontal, 0.5)
        )
        ramp = ramp.resize((w, h), Image.Resampling.BILINEAR)
        img = Image.composite(Image.new("RGB", (w, h), bg.color2), Image.new("RGB", (w, h), bg.color), ramp)
    else:
        img = Image.new("RGB", (w, h), bg.color)
    if bg.kind == "noise" and bg.noise_amp > 0:
        rng = random.Random(bg.noise_seed)
        amp = bg.noise_amp
        fine = Image.frombytes("L", (w, h), rng.randbytes(w * h)).point(lambda v: v * 2 * amp // 255)
        coarse = Image.frombytes(
            "L", (w // 16 + 2, h // 16 + 2), rng.randbytes((w // 16 + 2) * (h // 16 + 2))
        )
        coarse = coarse.resize((w, h), Image.Resampling.BILINEAR).point(lambda v: v * 2 * amp // 255)
        noise = Image.merge("RGB", (Image.blend(fine, coarse, 0.5),) * 3)
        shift = Image.new("RGB", (w, h), (amp, amp, amp))
        img = ImageChops.subtract(ImageChops.add(img, noise), shift)
    draw = ImageDraw.Draw(img)
    for c in bg.clutter:
        if c.kind == "line":
            draw.line(c.xy, fill=c.color, width=c.width)
        else:
            cx, cy, r, _ = c.xy
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=c.color)
    return img


def _draw_object(img: Image.Image, obj: ObjectGT) -> None:
    x0, y0, x1, y1 = obj.box
    px = x1 - x0
    fill, outline = shape_masks(obj.shape, px)
    img.paste(Image.new("RGB", (px, px), obj.rgb), (x0, y0), fill)
    img.paste(Image.new("RGB", (px, px), _shade(obj.rgb, 0.6)), (x0, y0), outline)


def _draw_text(draw: ImageDraw.ImageDraw, t: TextGT) -> None:
    if t.plate:
        pad = plate_pad(t.font_px)
        x0, y0, x1, y1 = t.box
        outer = (x0 - pad, y0 - pad, x1 + pad - 1, y1 + pad - 1)
        draw.rounded_rectangle(outer, radius=pad, fill=(252, 252, 250), outline=t.color, width=1)
    draw.text(t.origin, t.text, fill=t.color, font=font(t.font_px))


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image of `scene.width` x `scene.height`."""
    img = _background(scene.background, scene.width, scene.height)
    for obj in scene.objects:
        _draw_object(img, obj)
    draw = ImageDraw.Draw(img)
    for t in scene.texts:
        _draw_text(draw, t)
    return img
