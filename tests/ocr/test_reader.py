"""End to end with the real rapidocr engine on rendered images (a few small ones, to stay fast)."""

from __future__ import annotations

import shutil
import threading

import pytest
from PIL import Image, ImageDraw

from assistant.ocr import OCR_ENGINES, OCRError, OCRReader, normalize_text
from assistant.toyworld.generate import font

BACKGROUND = (236, 234, 228)


def _text_image(size: tuple[int, int], words: list[tuple[str, int, tuple[int, int]]]) -> Image.Image:
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    for text, px, xy in words:
        draw.text(xy, text, fill=(20, 20, 25), font=font(px))
    return image


@pytest.fixture(scope="module")
def reader() -> OCRReader:
    return OCRReader("rapidocr", tile_size=320, overlap=96)


@pytest.fixture(scope="module")
def wide_image() -> Image.Image:
    # 768 px wide: three windows across (0, 224, 448); "Library" straddles the first seam (x = 320),
    # the 9 px words are too small to read once the image is downscaled to 336 px.
    return _text_image(
        (768, 200),
        [
            ("OPEN", 9, (40, 30)),
            ("$4.75", 9, (640, 28)),
            ("Library", 14, (296, 120)),
            ("PARKING", 28, (500, 110)),
        ],
    )


def test_read_finds_small_text_once_each_in_reading_order(reader, wide_image):
    result = reader.read(wide_image)
    assert [normalize_text(line.text) for line in result.lines] == ["open", "$4.75", "library", "parking"]
    assert result.text == "\n".join(line.text for line in result.lines)
    assert not result.cached and result.seconds > 0
    library = result.lines[2]
    assert library.box[0] < 320 < library.box[2]  # mapped back across the seam, in image coordinates
    assert all(0.5 <= line.score <= 1.0 for line in result.lines)


def test_downscaled_single_view_misses_the_small_text(reader, wide_image):
    small = wide_image.copy()
    small.thumbnail((336, 336))
    seen = {normalize_text(line.text) for line in reader.engine.detect_and_read(small)}
    assert "open" not in seen and "$4.75" not in seen


def test_second_read_of_the_same_pixels_is_cached(reader, wide_image):
    first = reader.read(wide_image)
    again = reader.read(wide_image.copy())
    assert again.cached and again.lines == first.lines and again.seconds == first.seconds


def test_has_text(reader, wide_image, red_image):
    assert reader.has_text(wide_image)
    assert not reader.has_text(Image.new("RGB", (400, 300), BACKGROUND))
    assert not reader.has_text(red_image.resize((240, 160)))


def test_has_text_checks_a_small_image_at_twice_its_size(reader):
    from assistant.toyworld import PRESETS, generate_scene, render

    # a held-out 128-px toy scene whose one number the detector misses at 128 px (found at 256, and by read)
    scene = generate_scene(1_005_200_046, PRESETS["tiny"])
    image = render(scene)
    assert image.size == (128, 128) and scene.texts
    assert reader.engine.detect(image, side=128) == 0
    assert reader.has_text(image)
    assert normalize_text(reader.read(image).text) == normalize_text(scene.texts[0].text)


def test_concurrent_reads_match_serial_reads():
    reader = OCRReader("rapidocr", cache_size=0)
    images = [
        _text_image((220, 80), [("STOP", 20, (20, 20))]),
        _text_image((220, 80), [("$12.00", 18, (30, 24))]),
    ]
    expected = [reader.read(im).text for im in images]
    got: dict[int, str] = {}

    def work(i: int) -> None:
        got[i] = reader.read(images[i % 2]).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(4)] == expected * 2
    assert [normalize_text(t) for t in expected] == ["stop", "$12.00"]


def test_unknown_engine_and_bad_settings_are_refused_clearly():
    with pytest.raises(
        OCRError, match=r"unknown OCR engine 'easyocr'; choose from \['rapidocr', 'tesseract'\]"
    ):
        OCRReader("easyocr")
    with pytest.raises(OCRError, match="overlap must satisfy"):
        OCRReader(tile_size=256, overlap=256)
    with pytest.raises(OCRError, match="OCRReader takes"):
        OCRReader(tile=256)
    assert sorted(OCR_ENGINES) == ["rapidocr", "tesseract"]


@pytest.mark.skipif(shutil.which("tesseract") is not None, reason="tesseract is installed here")
def test_tesseract_without_its_binary_says_what_to_install():
    reader = OCRReader("tesseract")
    with pytest.raises(OCRError, match="tesseract") as info:
        reader.read(_text_image((120, 60), [("STOP", 20, (10, 10))]))
    assert "rapidocr" in str(info.value)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs the tesseract binary")
def test_tesseract_reads_a_word():
    pytest.importorskip("pytesseract")
    result = OCRReader("tesseract").read(_text_image((240, 80), [("STOP", 28, (20, 20))]))
    assert "stop" in normalize_text(result.text)
