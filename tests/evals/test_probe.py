"""The probe job: linear probes read chance from random features and the label from features that carry it;
the whole job runs on the tiny model, from toy scenes and from a labelled JSONL, and from the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from assistant.toyworld import COLORS, SHAPES
from assistant.toyworld.relations import REGIONS
from evals.clients import EvalError
from evals.probe import (
    ProbeItem,
    extract,
    linear_probe,
    load_items,
    majority,
    markdown,
    run_probe,
    toyworld_items,
)


def test_probe_on_random_features_reads_chance_and_on_informative_ones_the_label():
    g = torch.Generator().manual_seed(0)
    n, k = 800, 8
    y = torch.randint(0, k, (n,), generator=g)
    noise = torch.randn(n, 64, generator=g)
    assert linear_probe(noise, y, n // 2) < 1 / k + 0.08  # chance is 0.125
    informative = noise.clone()
    informative[:, :k] += 6 * torch.nn.functional.one_hot(y, k)  # the label, buried in noise dimensions
    assert linear_probe(informative, y, n // 2) > 0.95


def test_majority_is_the_fit_halfs_commonest_label_scored_on_the_test_half():
    y = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0])
    assert majority(y, 4) == pytest.approx(0.25)


def test_toyworld_items_hold_one_labelled_object():
    items = toyworld_items(6)
    assert len(items) == 6
    for item in items:
        assert item.labels["shape"] in SHAPES and item.labels["color"] in COLORS
        assert item.labels["region"] in {r for row in REGIONS for r in row}
        assert item.question("shape") == "What shape is the object?"
        assert item.question("region") == "Where in the image is the object?"
    assert toyworld_items(6)[0].image.tobytes() == items[0].image.tobytes()  # seeded


def test_probe_job_on_the_tiny_model(tiny_assistant, tmp_path):
    result = run_probe(tiny_assistant, tmp_path, n=8, steps=20)
    n_layers = tiny_assistant.model.config.text_config.num_hidden_layers
    assert set(result["scores"]) == {"shape", "color", "region", "size"}
    for attr in ("shape", "color", "region", "size"):
        row = result["scores"][attr]
        assert set(row) == {
            "majority",
            "encoder",
            "connector",
            "answer",
            *(f"lm.{k}" for k in range(n_layers + 1)),
        }
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert json.loads((tmp_path / "probe.json").read_text())["scores"] == result["scores"]
    assert "| encoder |" in (tmp_path / "probe.md").read_text()
    assert markdown(result["scores"]).count("\n") == len(result["scores"]["shape"]) + 1


@pytest.mark.parametrize("model", ["tiny_assistant", "tiny_qformer_assistant"])
def test_batched_questions_read_what_each_reads_alone(model, request):
    """Several scenes' questions share one padded batch; every point's features and every answer are those of the
    question asked alone (a batch of one, unpadded), on LLaVA-NeXT and on BLIP-2."""
    assistant = request.getfixturevalue(model)
    items, attrs = toyworld_items(3), ["region", "shape"]  # questions of different lengths: padded
    together = extract(assistant, items, attrs)  # one batch of six
    alone = extract(assistant, items, attrs, max_batch=1)
    assert together["answers"] == alone["answers"]
    for attr in attrs:
        for point, x in alone["features"][attr].items():
            assert x.shape[0] == 3
            assert torch.allclose(together["features"][attr][point], x, atol=1e-4), (attr, point)


def test_batches_hold_images_of_one_size_in_the_items_order():
    from PIL import Image

    from evals.probe import _same_size_batches

    wide, tall = Image.new("RGB", (60, 40)), Image.new("RGB", (40, 60))
    items = [ProbeItem(im, {"a": "x", "b": "y"}) for im in (wide, wide, tall, wide)]
    batches = list(_same_size_batches(items, ["a", "b"], most=3))
    index = {id(item): i for i, item in enumerate(items)}  # equal items are not the same item
    assert [[(attr, index[id(item)]) for attr, item, _ in b] for b in batches] == [
        [("a", 0), ("b", 0), ("a", 1)],
        [("b", 1)],
        [("a", 2), ("b", 2)],
        [("a", 3), ("b", 3)],
    ]


def test_probe_reads_a_labelled_jsonl(tiny_assistant, red_image, tmp_path):
    red_image.save(tmp_path / "red.png")
    rows = [{"image": "red.png", "labels": {"tint": "red" if i % 2 else "pink"}} for i in range(4)]
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    items = load_items(tmp_path / "labels.jsonl")
    assert items[0].question("tint") == "What is the tint of the object?"
    result = run_probe(tiny_assistant, None, data=tmp_path / "labels.jsonl", steps=5)
    assert set(result["scores"]) == {"tint"} and result["n_test"] == 2


def test_probe_refuses_bad_data(tmp_path):
    with pytest.raises(EvalError, match="does not exist"):
        load_items(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "x.png"}))
    with pytest.raises(EvalError, match="needs 'image' and a non-empty 'labels'"):
        load_items(tmp_path / "bad.jsonl")
    assert ProbeItem("x.png", {"a": "b"}, {"a": "Which?"}).question("a") == "Which?"
