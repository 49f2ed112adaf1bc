"""The pure parts: sliding windows, seam de-duplication, reading order, text similarity."""

from __future__ import annotations

import pytest

from assistant.ocr import OCRLine, merge_duplicates, normalize_text, reading_order, text_similarity, tile_grid
from assistant.ocr.geometry import containment, iou


def test_tile_grid_covers_the_image_with_overlapping_windows():
    tiles = tile_grid(768, 512, tile_size=320, overlap=96)
    assert [t[0] for t in tiles[:3]] == [0, 224, 448]
    assert {t[1] for t in tiles} == {0, 192}
    assert all(t[2] - t[0] == 320 and t[3] - t[1] == 320 for t in tiles)
    covered = {(x, y) for x0, y0, x1, y1 in tiles for x in range(x0, x1, 16) for y in range(y0, y1, 16)}
    assert covered == {(x, y) for x in range(0, 768, 16) for y in range(0, 512, 16)}
    assert tiles[-1][2:] == (768, 512)


def test_tile_grid_small_image_is_one_window_and_bad_overlap_is_refused():
    assert tile_grid(200, 100, tile_size=320, overlap=96) == [(0, 0, 200, 100)]
    with pytest.raises(ValueError, match="overlap"):
        tile_grid(500, 500, tile_size=100, overlap=100)


def test_box_overlap_measures():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert containment((0, 0, 100, 20), (10, 5, 30, 15)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_text_similarity_and_normalisation():
    assert normalize_text(" [HOTEL] ") == "hotel"
    assert normalize_text("NO ENTRY") == "noentry"
    assert text_similarity("Stat", "Station") == 1.0  # a piece cut at a seam
    assert text_similarity("PAP", "PARKING") >= 0.6  # the left piece, misread at its cut end
    assert text_similarity("STOP", "SALE") < 0.6
    assert text_similarity("EXIT", "TAXI") < 0.6
    assert text_similarity("", "x") == 0.0


def test_merge_drops_the_same_line_seen_by_two_tiles():
    a = OCRLine("Library", (300, 150, 345, 162), 0.98)
    b = OCRLine("Library", (301, 149, 346, 162), 0.95)
    merged = merge_duplicates([a, b])
    assert [m.text for m in merged] == ["Library"]
    assert merged[0].score == 0.98


def test_merge_keeps_the_whole_line_over_a_piece_cut_at_the_seam():
    whole = OCRLine("Station", (290, 40, 340, 50), 0.9)
    piece = OCRLine("Stati", (290, 40, 320, 50), 0.99)
    assert [m.text for m in merge_duplicates([piece, whole])] == ["Station"]


def test_merge_keeps_different_texts_and_repeated_texts_elsewhere():
    lines = [
        OCRLine("STOP", (10, 10, 40, 20)),
        OCRLine("STOP", (200, 10, 230, 20)),  # a second sign with the same word
        OCRLine("$4.75", (12, 12, 42, 22)),  # overlapping box, different text
    ]
    assert sorted(m.text for m in merge_duplicates(lines)) == ["$4.75", "STOP", "STOP"]


def test_merge_stitches_a_line_cut_in_both_tiles():
    left = OCRLine("NO EN", (280, 60, 330, 72))
    right = OCRLine("ENTRY", (312, 60, 370, 72))
    merged = merge_duplicates([right, left])
    assert [(m.text, m.box) for m in merged] == [("NO ENTRY", (280, 60, 370, 72))]


def test_merge_drops_empty_texts():
    assert merge_duplicates([OCRLine(" ", (0, 0, 5, 5)), OCRLine("ok", (9, 9, 20, 20))])[0].text == "ok"


def test_reading_order_rows_top_to_bottom_then_left_to_right():
    lines = [
        OCRLine("C", (300, 102, 340, 114)),
        OCRLine("B", (200, 12, 240, 24)),
        OCRLine("D", (10, 100, 50, 112)),
        OCRLine("A", (10, 10, 50, 22)),
        OCRLine("E", (10, 300, 50, 340)),
    ]
    assert [ln.text for ln in reading_order(lines)] == ["A", "B", "D", "C", "E"]


def test_reading_order_tall_line_beside_two_short_ones_keeps_rows_apart():
    lines = [OCRLine("low", (10, 40, 50, 50)), OCRLine("high", (10, 10, 50, 20))]
    assert [ln.text for ln in reading_order(lines)] == ["high", "low"]
    assert reading_order([]) == []
