"""Safe image loading: size caps checked from the header before decoding, one RGB frame out, clear errors."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from assistant.errors import ImageError


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 1
    max_side: int = 16_384


DEFAULT_LIMITS = ImageLimits()


def load_image(source: str | Path | bytes | Image.Image, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Open a path, raw bytes or a PIL image as an RGB image, refusing anything over `limits` before decoding it."""
    if isinstance(source, Image.Image):
        _check_size(source.size, limits)
        return _to_rgb(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"image file {str(path)!r} does not exist; check the path")
        if path.stat().st_size > limits.max_bytes:
            raise ImageError(
                f"image file is {path.stat().st_size} bytes, over the {limits.max_bytes}-byte limit"
            )
        data = path.read_bytes()
    else:
        data = source
    return decode_image(data, limits)


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    if len(data) > limits.max_bytes:
        raise ImageError(
            f"image is {len(data)} bytes, over the {limits.max_bytes}-byte limit; send a smaller image"
        )
    if not data:
        raise ImageError("image data is empty; send a PNG, JPEG, GIF or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            _check_size(image.size, limits)
            image.seek(0)  # first frame of an animation
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("image has too many pixels to decode safely; send a smaller image") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            "data is not a readable image (corrupt or unsupported format); send PNG, JPEG, GIF or WebP"
        ) from exc
    return _to_rgb(image)


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if min(width, height) < limits.min_side:
        raise ImageError(f"image is {width}x{height}; each side must be at least {limits.min_side} px")
    if max(width, height) > limits.max_side:
        raise ImageError(f"image is {width}x{height}; each side must be at most {limits.max_side} px")
    if width * height > limits.max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height} pixels, over the {limits.max_pixels}-pixel limit"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
