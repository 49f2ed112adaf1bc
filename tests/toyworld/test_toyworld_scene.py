"""Scenes: determinism, ground truth that matches the pixels, presets."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest

from assistant.toyworld import PRESETS, Scene, SceneConfig, generate_scene, render
from assistant.toyworld.relations import count, largest, reading_order, relation
from assistant.toyworld.vocab import COLORS, SHAPES


def png_bytes(scene: Scene) -> bytes:
    buf = io.BytesIO()
    render(scene).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_same_seed_same_bytes_different_seeds_differ(preset: str) -> None:
    config = PRESETS[preset]
    a, b = generate_scene(7, config), generate_scene(7, config)
    assert a == b
    assert png_bytes(a) == png_bytes(b)
    assert png_bytes(generate_scene(8, config)) != png_bytes(a)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_dict_round_trip_through_json(preset: str) -> None:
    scene = generate_scene(3, PRESETS[preset])
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("preset,n", [("tiny", 120), ("standard", 25), ("ocr", 25)])
def test_ground_truth_matches_render(preset: str, n: int) -> None:
    for seed in range(n):
        scene = generate_scene(seed, PRESETS[preset])
        img = render(scene)
        assert img.mode == "RGB" and img.size == (scene.width, scene.height)
        boxes = [o.box for o in scene.objects] + [t.box for t in scene.texts]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= scene.width and 0 <= y0 < y1 <= scene.height
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not _overlap(a, b), (seed, a, b)
        for o in scene.objects:
            cx, cy = (o.box[0] + o.box[2]) // 2, (o.box[1] + o.box[3]) // 2
            assert img.getpixel((cx, cy)) == COLORS[o.color], (seed, o)
            assert o.shape in SHAPES and o.size in ("small", "medium", "large")
        for t in scene.texts:  # the text's ink is inside its box: dark pixels there
            crop = img.crop(t.box).convert("L")
            assert min(crop.getdata()) < 128, (seed, t)


def test_tiny_preset_counts_and_sizes() -> None:
    config = PRESETS["tiny"]
    counts = Counter()
    for seed in range(300):
        scene = generate_scene(seed, config)
        assert (scene.width, scene.height) == (128, 128)
        counts[len(scene.objects)] += 1
        for o in scene.objects:
            side = o.box[2] - o.box[0]
            assert 28 <= side <= 48 and o.box[3] - o.box[1] == side
        assert all(t.font_px >= 20 for t in scene.texts)
    assert set(counts) == set(range(7)), counts


def test_standard_has_text_too_small_for_one_336_tile() -> None:
    config = PRESETS["standard"]
    scenes = [generate_scene(s, config) for s in range(60)]
    assert len({(s.width, s.height) for s in scenes}) >= 4
    small = [
        (t.font_px, s.width, s.height)
        for s in scenes
        for t in s.texts
        if t.font_px < 10 and t.font_px * 336 / max(s.width, s.height) < 6
    ]
    assert small, "no text that becomes unreadable when the image is downscaled to 336 px"
    assert any(t.font_px >= 20 for s in scenes for t in s.texts)


def test_ocr_preset_is_text_heavy() -> None:
    scenes = [generate_scene(s, PRESETS["ocr"]) for s in range(20)]
    assert sum(len(s.texts) for s in scenes) >= 2 * sum(len(s.objects) for s in scenes)
    assert {t.kind for s in scenes for t in s.texts} == {"sign", "word", "price", "number"}


def test_relations_and_counts() -> None:
    scene = next(s for s in (generate_scene(i, PRESETS["tiny"]) for i in range(100)) if len(s.objects) >= 4)
    for a in scene.objects:
        for b in scene.objects:
            r = relation(a, b)
            if "left" in r:
                assert a.box[2] <= b.box[0] and "left" not in relation(b, a) and "right" in relation(b, a)
            if "above" in r:
                assert a.box[3] <= b.box[1] and "below" in relation(b, a)
    assert count(scene) == len(scene.objects)
    assert sum(count(scene, shape=s) for s in SHAPES) == len(scene.objects)
    big = largest(scene)
    if big is not None:
        assert all(big.area >= o.area for o in scene.objects)


def test_reading_order() -> None:
    scene = generate_scene(5, PRESETS["ocr"])
    ordered = reading_order(scene.texts)
    assert sorted(ordered, key=id) == sorted(scene.texts, key=id)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"object_px": (40, 30)}, "object_px"),
        ({"count": (0, 40)}, "cannot be placed"),
        ({"sizes": ((40, 40),)}, "fit the largest object"),
        ({"text_kinds": ("poem",)}, "unknown text kinds"),
    ],
)
def test_config_validation_says_what_is_wrong(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SceneConfig(**kwargs)
