"""Safe image loading: what is accepted, converted, and refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from assistant.errors import ImageError
from assistant.images import ImageLimits, decode_image, load_image


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    "image,fmt",
    [
        (Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG"),
        (Image.new("I;16", (20, 10), 40000), "PNG"),
        (Image.new("RGBA", (20, 10), (255, 0, 0, 0)), "PNG"),
        (Image.new("P", (20, 10), 3), "GIF"),
        (Image.new("L", (1, 1), 7), "PNG"),
    ],
)
def test_unusual_modes_become_rgb(image, fmt):
    out = decode_image(_encode(image, fmt))
    assert out.mode == "RGB" and out.size == image.size


def test_transparent_pixels_become_white():
    assert decode_image(_encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)))).getpixel((0, 0)) == (
        255,
        255,
        255,
    )


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (30, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    assert decode_image(_encode(image, "JPEG", exif=exif)).size == (10, 30)


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data).getpixel((0, 0))[0] > 200


def test_decompression_bomb_is_refused_from_the_header():
    bomb = _encode(Image.new("1", (7_000, 7_000)))  # tiny file, 49 M pixels
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="pixel limit"):
        decode_image(bomb)


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty"),
        (b"hello, not an image", "not a readable image"),
        (_encode(Image.new("RGB", (64, 64)))[:60], "not a readable"),
    ],
)
def test_bad_bytes_are_explained(data, match):
    with pytest.raises(ImageError, match=match):
        decode_image(data)


def test_limits_on_bytes_and_sides():
    data = _encode(Image.new("RGB", (100, 3)))
    with pytest.raises(ImageError, match="at least 4 px"):
        decode_image(data, ImageLimits(min_side=4))
    with pytest.raises(ImageError, match="byte limit"):
        decode_image(data, ImageLimits(max_bytes=10))
    with pytest.raises(ImageError, match="at most 50 px"):
        decode_image(data, ImageLimits(max_side=50))


def test_missing_file_is_explained(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")
