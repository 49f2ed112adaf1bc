"""A faster AnyRes preprocessing path, numerically equivalent to transformers' `LlavaNextImageProcessorPil`.

    from assistant.anyres import anyres_preprocess, with_fast_anyres
    batch = anyres_preprocess(images, processor.image_processor)   # {"pixel_values", "image_sizes"}, torch
    processor = with_fast_anyres(processor)   # the processor, its AnyRes calls on this path (inference loads)

The reference converts every crop between PIL and NumPy, resizes each tile to the size it already has,
and rescales and normalises each tile on its own. This path does the same arithmetic once per image: one PIL
resize of the whole image to its best grid, one table lookup per channel (the reference's exact rescale +
normalise arithmetic, precomputed for the 256 byte values), a zero-copy split into tiles, and the base view
(the whole image squashed to one tile) the same way. Pixel values equal the reference's bit for bit;
`tests/benchmarks/test_anyres.py` checks it on many sizes and modes.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BatchFeature, select_best_resolution
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from assistant.errors import ConfigError


def _tile_side(image_processor: Any) -> int:
    crop = image_processor.crop_size
    side = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
    if not side:
        raise ConfigError("the image processor has no crop_size height; build it with assistant.processing")
    return int(side)


def fit_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the image scaled to fit `target` with its aspect ratio (transformers' rounding)."""
    target_h, target_w = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


@functools.lru_cache(maxsize=8)
def normalise_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(C, 256) float32: every uint8 value rescaled and normalised with the reference's exact arithmetic
    ((x * 1/255 in float64 -> float32) - mean) / std, all float32), so a lookup gives bit-identical pixels."""
    m, s = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    x = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)  # (256,)
    table = ((x[None, :] - m[:, None]) / s[:, None]).astype(np.float32)  # (C, 256)
    table.flags.writeable = False
    return table


def _normalise(array: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (C, H, W) float32 by one table lookup per channel."""
    planes = np.ascontiguousarray(array.transpose(2, 0, 1))  # (C, H, W) uint8
    out = np.empty(planes.shape, dtype=np.float32)  # (C, H, W)
    for c in range(planes.shape[0]):
        np.take(table[c], planes[c], out=out[c])
    return out


def anyres_image(
    image: Image.Image, grids: list[list[int]], tile: int, table: np.ndarray, resample: int
) -> np.ndarray:
    """One image -> (1 + rows * cols, C, tile, tile): the base view, then the tiles of its best grid."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    best_h, best_w = select_best_resolution((height, width), grids)
    new_h, new_w = fit_size(height, width, (best_h, best_w))
    resized = np.asarray(image.resize((new_w, new_h), resample=resample))  # (h, w, C) uint8
    # The reference pads with uint8 zeros before normalising: those pixels become -mean / std.
    canvas = np.empty((3, best_h, best_w), dtype=np.float32)  # (C, H, W)
    canvas[:] = table[:, :1, None]
    top, left = (best_h - new_h) // 2, (best_w - new_w) // 2
    canvas[:, top : top + new_h, left : left + new_w] = _normalise(resized, table)
    rows, cols = best_h // tile, best_w // tile
    tiles = canvas.reshape(3, rows, tile, cols, tile).transpose(1, 3, 0, 2, 4).reshape(-1, 3, tile, tile)
    base = _normalise(np.asarray(image.resize((tile, tile), resample=resample)), table)  # (C, t, t)
    return np.concatenate([base[None], tiles])  # (1 + R*C, C, t, t)


def anyres_preprocess(images: list[Image.Image], image_processor: Any) -> dict[str, torch.Tensor]:
    """What `image_processor(images, return_tensors="pt")` returns, for a LLaVA-NeXT PIL image processor."""
    if not images:
        raise ConfigError("anyres_preprocess needs at least one image")
    grids = image_processor.image_grid_pinpoints
    tile = _tile_side(image_processor)
    resample = int(image_processor.resample)
    table = normalise_table(tuple(image_processor.image_mean), tuple(image_processor.image_std))  # (C, 256)
    per_image = [anyres_image(img, grids, tile, table, resample) for img in images]
    most = max(len(x) for x in per_image)
    pixel_values = np.zeros((len(per_image), most, 3, tile, tile), dtype=np.float32)  # (B, P_max, C, t, t)
    for row, x in enumerate(per_image):
        pixel_values[row, : len(x)] = x
    sizes = [[img.height, img.width] for img in images]
    return {"pixel_values": torch.from_numpy(pixel_values), "image_sizes": torch.tensor(sizes)}


def fast_path_fits(image_processor: Any) -> bool:
    """True when `anyres_preprocess` reproduces this processor: a LLaVA-NeXT PIL processor with the standard
    settings (square tiles, base view squashed to one tile, rescale by 1/255, normalise, pad), as
    `assistant.processing` builds it and as the hub's LLaVA-NeXT checkpoints ship it."""
    ip = image_processor
    crop, size = ip.crop_size, ip.size
    tile = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
    side = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
    width = crop.get("width") if isinstance(crop, dict) else getattr(crop, "width", None)
    grids = getattr(ip, "image_grid_pinpoints", None) or []
    stats = [getattr(ip, "image_mean", None), getattr(ip, "image_std", None)]
    return (
        isinstance(ip, LlavaNextImageProcessorPil)
        and bool(tile)
        and tile == width == side
        and all(
            getattr(ip, flag, False) is True for flag in ("do_resize", "do_rescale", "do_normalize", "do_pad")
        )
        and getattr(ip, "do_convert_rgb", True) is not False
        and abs(float(ip.rescale_factor) - 1 / 255) < 1e-12
        and all(len(grid) == 2 and grid[0] % tile == 0 and grid[1] % tile == 0 for grid in grids)
        and all(isinstance(x, (list, tuple)) and len(x) == 3 for x in stats)
    )


class AnyResImageProcessor(LlavaNextImageProcessorPil):
    """`LlavaNextImageProcessorPil` whose calls with opaque PIL images and default options (what the processor
    makes for a chat prompt) take `anyres_preprocess`; any other call goes to the reference. It saves as the
    reference class, so a directory it writes loads anywhere."""

    def preprocess(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        pil = images if isinstance(images, list) else [images]
        if (
            not args
            and pil
            # opaque PIL images only: the reference flattens transparency onto white, this path does not
            and all(isinstance(img, Image.Image) and img.mode in ("RGB", "L") for img in pil)
            and kwargs.get("return_tensors") == "pt"
            and set(kwargs) <= {"return_tensors", "do_pad"}
            and kwargs.get("do_pad", True) is True
            and fast_path_fits(self)  # settings changed since the swap count too
        ):
            return BatchFeature(anyres_preprocess(pil, self))
        return super().preprocess(images, *args, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["image_processor_type"] = LlavaNextImageProcessorPil.__name__
        return out


def with_fast_anyres(processor: Any) -> Any:
    """`processor` with its image processor on the fast path, when the fast path reproduces it exactly
    (`fast_path_fits`); otherwise `processor` unchanged."""
    image_processor = getattr(processor, "image_processor", None)
    # exactly the reference class (not a subclass, nor one already swapped), with settings it reproduces
    if type(image_processor) is not LlavaNextImageProcessorPil or not fast_path_fits(image_processor):
        return processor
    processor.image_processor = AnyResImageProcessor.from_dict(image_processor.to_dict())
    return processor
