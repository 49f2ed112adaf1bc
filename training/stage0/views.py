"""Scenes -> the views LLaVA-NeXT feeds its vision tower, with per-patch ground truth.

A `tile` x `tile` grid image is seen as one base view (the whole image resized to one tile, bicubic,
like `LlavaNextImageProcessorPil`) plus full-resolution tiles in row-major order. Each view is cut into
`(tile // patch) ** 2` patches; every patch gets the object that covers most of it (shape, colour,
objectness) and whether an object's centre falls in it. A view's count is the number of objects visible in
it (at least `min_visible_px` of its pixels lie in the view's part of the image), what someone shown only
that view would count:
an object cut by a tile border counts in both tiles. (Counting object centres instead asks where the centre
of a cut object lies; on a probe of the first encoder, tiles without a cut object were counted right 100% of
the time and tiles with one 80%, and 65% of tiles have one.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from assistant.processing import CLIP_MEAN, CLIP_STD
from assistant.toyworld import COLORS, SHAPES, Scene, generate_scene, render
from assistant.toyworld.render import shape_masks
from assistant.toyworld.scene import SceneConfig

SHAPE_IDS = {s: i for i, s in enumerate(SHAPES)}
COLOR_IDS = {c: i for i, c in enumerate(COLORS)}
IGNORE = -100


@dataclass(frozen=True)
class ViewGeometry:
    """Where each view of an image lies: `(x0, y0, scale)` maps image px to view px as (x - x0) * scale."""

    width: int
    height: int
    tile: int
    patch: int
    min_cover: float = 0.15  # fraction of a patch an object must cover to label it
    min_visible_px: int = 64  # an object counts in a view when this many of its image pixels lie in it
    cells: int = 4  # silhouette target: cells x cells sub-cells per patch

    def __post_init__(self) -> None:
        if self.width % self.tile or self.height % self.tile:
            raise ValueError(f"image {self.width}x{self.height} is not a grid of {self.tile} px tiles")
        if self.tile % self.patch or self.patch % self.cells:
            raise ValueError(
                f"tile {self.tile} must be a multiple of patch {self.patch}, itself of {self.cells}"
            )
        if self.width != self.height:
            raise ValueError("stage 0 uses square scenes; pick a preset with square sizes")

    @property
    def grid(self) -> int:
        return self.tile // self.patch

    @property
    def views(self) -> list[tuple[int, int, float]]:
        base = [(0, 0, self.tile / self.width)]
        tiles = [
            (x, y, 1.0) for y in range(0, self.height, self.tile) for x in range(0, self.width, self.tile)
        ]
        return base + tiles

    @property
    def num_views(self) -> int:
        return len(self.views)


@dataclass
class ViewBatch:
    """Views of B scenes, V views each, P patches per view."""

    pixels: torch.Tensor  # (B, V, 3, T, T) normalised like CLIP
    objectness: torch.Tensor  # (B, V, P) 0/1
    shape: torch.Tensor  # (B, V, P) shape id or IGNORE
    color: torch.Tensor  # (B, V, P) colour id or IGNORE
    centre: torch.Tensor  # (B, V, P) 0/1: an object's centre lies in the patch
    owner: torch.Tensor  # (B, V, P) index of the object that labels the patch, or -1
    part: torch.Tensor  # (B, V, P) which cell of a 3 x 3 grid over its object's box the patch centre is in
    extent: torch.Tensor  # (B, V, P) log2 of its object's side in the view's patches (0 where no object)
    silhouette: torch.Tensor  # (B, V, P, M*M) fraction of each sub-cell of the patch covered by objects
    count: torch.Tensor  # (B, V) objects visible in the view
    scenes: list[Scene]
    view_objects: list[list[list[int]]]  # [b][v] -> indices of objects whose centre is in the view


def label_map(scene: Scene) -> np.ndarray:
    """(H, W) int map: 1 + index of the object drawn at each pixel, 0 for background."""
    out = np.zeros((scene.height, scene.width), dtype=np.int16)
    for i, obj in enumerate(scene.objects):
        x0, y0, x1, y1 = obj.box
        fill, _ = shape_masks(obj.shape, x1 - x0)
        mask = np.asarray(fill) >= 128
        region = out[y0:y1, x0:x1]
        region[mask[: region.shape[0], : region.shape[1]]] = i + 1
    return out


def normalise(images: np.ndarray) -> torch.Tensor:
    """(..., T, T, 3) uint8 -> (..., 3, T, T) float, CLIP mean/std (what the LLaVA processor does)."""
    x = torch.from_numpy(images).float().div_(255.0)
    x = (x - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    return x.movedim(-1, -3).contiguous()


def view_pixels(image: Image.Image, geo: ViewGeometry) -> np.ndarray:
    """(V, T, T, 3) uint8: the base view (bicubic resize) then the tiles."""
    t = geo.tile
    base = np.asarray(image.resize((t, t), Image.Resampling.BICUBIC))
    full = np.asarray(image)
    tiles = [full[y : y + t, x : x + t] for x, y, _ in geo.views[1:]]
    return np.stack([base, *tiles])


def silhouettes(labels: np.ndarray, geo: ViewGeometry) -> np.ndarray:
    """(V, P, M*M): per patch, the fraction of each of its M x M sub-cells that objects cover."""
    g, m, out = geo.grid, geo.cells, []
    for x0, y0, scale in geo.views:
        step = round(1 / scale)
        crop = labels[y0 : y0 + geo.tile * step, x0 : x0 + geo.tile * step] > 0
        c = geo.patch * step // m  # image px per sub-cell side
        cells = crop.reshape(g, m, c, g, m, c).mean(axis=(2, 5))  # (g, m, g, m)
        out.append(cells.transpose(0, 2, 1, 3).reshape(g * g, m * m))
    return np.stack(out).astype(np.float32)


def view_targets(
    scene: Scene, geo: ViewGeometry
) -> tuple[np.ndarray, np.ndarray, list[list[int]], np.ndarray]:
    """Per-patch targets (V, P, 6) = (objectness, shape, colour, centre, owner, part), the count of visible
    objects per view (V,), the indices of the objects whose centre lies in each view, and per patch the log2 of
    its object's side in view patches (V, P) (its apparent size: the base view halves it; 0 without an object)."""
    labels = label_map(scene)
    n, g, p = len(scene.objects), geo.grid, geo.patch
    out = np.full((geo.num_views, g * g, 6), IGNORE, dtype=np.int64)
    extent = np.zeros((geo.num_views, g * g), dtype=np.float32)
    out[..., 0] = 0
    out[..., 3] = 0
    out[..., 4] = -1
    per_view: list[list[int]] = []
    visible = np.zeros(geo.num_views, dtype=np.int64)
    for v, (x0, y0, scale) in enumerate(geo.views):
        step = round(1 / scale)  # image px per view px
        crop = labels[y0 : y0 + geo.tile * step, x0 : x0 + geo.tile * step]
        area = np.bincount(crop.ravel(), minlength=n + 1)[1:]  # image px of each object in the view
        visible[v] = int((area >= geo.min_visible_px).sum())
        # coverage of each patch by each object: (g, g, n + 1)
        span = p * step
        cells = crop.reshape(g, span, g, span).transpose(0, 2, 1, 3).reshape(g * g, -1)
        cover = np.stack([(cells == k).mean(axis=1) for k in range(n + 1)], axis=1)  # (P, n + 1)
        best = cover[:, 1:].argmax(axis=1) if n else np.zeros(g * g, dtype=int)
        inside: list[int] = []
        for i, obj in enumerate(scene.objects):
            cx, cy = obj.center
            vx, vy = (cx - x0) * scale, (cy - y0) * scale
            if 0 <= vx < geo.tile and 0 <= vy < geo.tile:
                inside.append(i)
                out[v, int(vy // p) * g + int(vx // p), 3] = 1
        for k in range(g * g):
            if n and cover[k, best[k] + 1] >= geo.min_cover:
                obj = scene.objects[best[k]]
                out[v, k, :3] = (1, SHAPE_IDS[obj.shape], COLOR_IDS[obj.color])
                out[v, k, 4] = best[k]
                extent[v, k] = np.log2((obj.box[2] - obj.box[0]) * scale / p)
                # where the patch centre lies inside the object's box: a 3 x 3 grid cell
                bx0, by0, bx1, by1 = ((c - o) * scale for c, o in zip(obj.box, (x0, y0, x0, y0), strict=True))
                px, py = (k % g + 0.5) * p, (k // g + 0.5) * p
                col = min(2, max(0, int(3 * (px - bx0) / (bx1 - bx0))))
                row = min(2, max(0, int(3 * (py - by0) / (by1 - by0))))
                out[v, k, 5] = 3 * row + col
        per_view.append(inside)
    return out, visible, per_view, extent


def make_batch(seeds: list[int], config: SceneConfig, geo: ViewGeometry) -> ViewBatch:
    """Generate, render and label the scenes of `seeds` (deterministic)."""
    scenes = [generate_scene(s, config) for s in seeds]
    pixels, targets, counts, objects, sil, extents = [], [], [], [], [], []
    for scene in scenes:
        pixels.append(view_pixels(render(scene), geo))
        sil.append(silhouettes(label_map(scene), geo))
        t, c, o, e = view_targets(scene, geo)
        targets.append(t)
        extents.append(e)
        counts.append(c)
        objects.append(o)
    tg = torch.from_numpy(np.stack(targets))  # (B, V, P, 6)
    return ViewBatch(
        pixels=normalise(np.stack(pixels)),
        objectness=tg[..., 0],
        shape=tg[..., 1],
        color=tg[..., 2],
        centre=tg[..., 3],
        owner=tg[..., 4],
        part=tg[..., 5],
        extent=torch.from_numpy(np.stack(extents)),
        silhouette=torch.from_numpy(np.stack(sil)),
        count=torch.from_numpy(np.stack(counts)),
        scenes=scenes,
        view_objects=objects,
    )


def view_pairs(scene: Scene, indices: list[int]) -> Counter[tuple[str, str]]:
    """The (colour, shape) multiset of the objects `indices` of `scene`."""
    return Counter((scene.objects[i].color, scene.objects[i].shape) for i in indices)
