"""The hint text and the result cache."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from assistant.ocr import HINT_PREFIX, LRUCache, OCRLine, OCRResult, format_hint, image_hash


def _result(*texts: str) -> OCRResult:
    lines = tuple(OCRLine(t, (0, 10 * i, 10, 10 * i + 8)) for i, t in enumerate(texts))
    return OCRResult.from_lines(lines, seconds=0.1)


def test_format_hint():
    assert format_hint(_result()) == ""
    assert format_hint(_result("STOP", "$4.75")) == f"{HINT_PREFIX} STOP | $4.75"
    assert _result("STOP", "$4.75").text == "STOP\n$4.75"


def test_format_hint_cuts_long_text_at_a_line_boundary():
    hint = format_hint(_result("alpha", "beta", "gamma"), max_chars=12)
    assert hint == f"{HINT_PREFIX} alpha | beta ..."
    assert format_hint(_result("x" * 50), max_chars=10) == f"{HINT_PREFIX} {'x' * 10}..."
    with pytest.raises(ValueError, match="max_chars"):
        format_hint(_result("a"), max_chars=0)


def test_image_hash_depends_on_pixels_only():
    a = Image.new("RGB", (20, 10), (200, 200, 200))
    b = a.copy()
    assert image_hash(a) == image_hash(b)
    b.putpixel((3, 3), (0, 0, 0))
    assert image_hash(a) != image_hash(b)
    assert image_hash(Image.new("RGB", (10, 20), (200, 200, 200))) != image_hash(a)


def test_lru_cache_evicts_the_least_recently_used():
    cache: LRUCache[int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    disabled: LRUCache[int] = LRUCache(0)
    disabled.put("a", 1)
    assert disabled.get("a") is None and len(disabled) == 0


def test_lru_cache_under_threads_stays_within_capacity():
    cache: LRUCache[int] = LRUCache(50)

    def work(k: int) -> None:
        for i in range(500):
            cache.put(f"{k}-{i % 80}", i)
            cache.get(f"{k}-{(i * 7) % 80}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50
