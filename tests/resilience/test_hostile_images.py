"""Hostile images through the API: a decompression bomb is refused fast and without a memory spike; truncated,
tiny, extreme-aspect, animated, CMYK, 16-bit and EXIF-rotated images are each served correctly or refused with
a 400 in the OpenAI error shape."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from assistant.images import decode_image
from tests.resilience.conftest import chat_body, image_message, is_openai_error, rss_mb
from tests.serving.conftest import data_url, png_bytes, red_square


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A 30000 x 30000 one-bit PNG: about 110 KB on the wire, 900 M pixels (2.7 GB as RGB) if decoded."""
    return encode(Image.new("1", (30_000, 30_000)), "PNG", optimize=True)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((220, 30, 30), (30, 220, 30), (30, 30, 220))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def sixteen_bit() -> bytes:
    image = Image.new("I;16", (48, 32))
    image.putdata([(x * 1300) % 65536 for x in range(48 * 32)])
    return encode(image, "PNG")


def post_image(http, model_name: str, data: bytes, mime: str = "image/png"):
    return http.post("/v1/chat/completions", json=chat_body(model_name, image_message(data_url(data, mime))))


def test_decompression_bomb_is_refused_fast_without_memory_growth(http, model_name):
    data = bomb_png()
    assert len(data) < 1_000_000
    post_image(http, model_name, png_bytes(red_square()))  # warm up the path before measuring
    before = rss_mb()
    started = time.monotonic()
    response = post_image(http, model_name, data)
    elapsed = time.monotonic() - started
    growth = rss_mb() - before
    assert response.status_code == 400 and is_openai_error(response.json()), response.text
    assert elapsed < 1.0, elapsed
    assert growth < 50, growth


TRUNCATED_PNG = png_bytes(red_square((64, 64)))[:-200]
HOSTILE = {
    "truncated-png": (lambda: TRUNCATED_PNG, "image/png"),
    "truncated-jpeg": (lambda: encode(red_square((64, 64)), "JPEG")[:300], "image/jpeg"),
    "header-only": (lambda: b"\x89PNG\r\n\x1a\n", "image/png"),
    "not-an-image": (lambda: b"GIF89a" + b"\xff" * 100, "image/gif"),
    "1x1": (lambda: png_bytes(Image.new("RGB", (1, 1), (255, 0, 0))), "image/png"),
    "100000x1": (lambda: png_bytes(Image.new("RGB", (100_000, 1))), "image/png"),
    "1x100000": (lambda: png_bytes(Image.new("L", (1, 100_000))), "image/png"),
    "animated-gif": (animated_gif, "image/gif"),
    "animated-png": (
        lambda: encode(
            Image.new("RGB", (40, 40)), "PNG", save_all=True, append_images=[red_square((40, 40))]
        ),
        "image/png",
    ),
    "cmyk-jpeg": (lambda: encode(Image.new("CMYK", (40, 40), (0, 200, 200, 0)), "JPEG"), "image/jpeg"),
    "16-bit-png": (sixteen_bit, "image/png"),
    "palette-with-transparency": (
        lambda: encode(red_square().convert("P"), "PNG", transparency=0),
        "image/png",
    ),
    "la-png": (lambda: png_bytes(Image.new("LA", (40, 40), (100, 50))), "image/png"),
    "webp": (lambda: encode(red_square(), "WEBP"), "image/webp"),
    "tiff": (lambda: encode(red_square(), "TIFF"), "image/tiff"),
    "bmp": (lambda: encode(red_square(), "BMP"), "image/bmp"),
    **{
        f"exif-orientation-{o}": ((lambda o=o: with_orientation(red_square((48, 32)), o)), "image/jpeg")
        for o in range(1, 9)
    },
}
MUST_SERVE = {
    "animated-gif",
    "animated-png",
    "cmyk-jpeg",
    "16-bit-png",
    "palette-with-transparency",
    "la-png",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_image_is_served_or_refused_with_400(http, model_name, name):
    make, mime = HOSTILE[name]
    response = post_image(http, model_name, make(), mime)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert is_openai_error(response.json()) and name not in MUST_SERVE, response.text
    else:
        assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")
        assert not name.startswith("exif") or response.json()["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_rotation_is_applied(orientation):
    """The image the model sees is the upright one: the same pixels as the image transposed by hand."""
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(
        Image.open(io.BytesIO(with_orientation(red_square((48, 32)), orientation)))
    )
    seen = decode_image(with_orientation(red_square((48, 32)), orientation))
    assert seen.size == upright.size == ((48, 32) if orientation < 5 else (32, 48))
    assert list(seen.getdata()) == list(upright.convert("RGB").getdata())
