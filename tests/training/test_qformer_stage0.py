"""Stage 0's Q-Former pretraining (training/stage0/qformer.py): queries as object slots, for real on toy scenes, and
its weights starting stage 1's Q-Former."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import Blip2VisionModel, CLIPVisionConfig, CLIPVisionModel
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from assistant.errors import ConfigError
from assistant.modeling import build_model
from assistant.qformer import QFORMER_WEIGHTS, blip2_tower_from_clip
from assistant.toyworld.scene import Background, ObjectGT, Scene
from tests.conftest import TINY_VISION
from training.stage0.qformer import QFormerArgs, pretrain, slot_targets


def _scene(*objects: ObjectGT) -> Scene:
    return Scene(
        seed=0, width=128, height=128, background=Background("plain", (240, 240, 240)), objects=objects
    )


def test_objects_go_to_the_queries_of_the_cell_that_holds_their_centre():
    small = ObjectGT("star", "red", "small", (0, 0, 20, 20))  # centre (10, 10): cell 0 of a 2 x 2 grid
    big = ObjectGT("heart", "blue", "large", (40, 40, 100, 100))  # centre (70, 70): cell 3
    other = ObjectGT("circle", "green", "medium", (70, 10, 110, 50))  # centre (90, 30): cell 1
    third = ObjectGT(
        "cross", "pink", "small", (2, 2, 12, 12)
    )  # cell 0's second query (smaller than the star)
    fourth = ObjectGT("square", "red", "small", (20, 20, 30, 30))  # cell 0 again: no query left
    target, left_out = slot_targets([_scene(small, big, other, third, fourth)], num_queries=8, grid=2)
    assert left_out == 1
    occupied = target["objectness"][0].nonzero().flatten().tolist()
    assert occupied == [0, 1, 2, 6]  # two queries per cell, cells row-major
    assert target["shape"][0, 0] == 3 and target["shape"][0, 1] == 6 and target["shape"][0, 6] == 7
    assert torch.allclose(target["offset"][0, 6], torch.tensor([70 / 64 - 1, 70 / 64 - 1]))
    assert (target["shape"][0, [3, 4, 5, 7]] == -100).all()


def test_a_query_count_the_grid_does_not_divide_is_refused():
    with pytest.raises(ConfigError, match="multiple of grid"):
        QFormerArgs(tower="t", out="o", num_query_tokens=10, grid=2)


@pytest.fixture(scope="module")
def tower_dir(tmp_path_factory):
    clip = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"}))
    out = tmp_path_factory.mktemp("tower") / "vision_blip2"
    blip2_tower_from_clip(clip, image_size=64, feature_layer=-2).save_pretrained(out)
    BlipImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(out)
    return out


def test_pretraining_makes_the_queries_depend_on_the_image_and_starts_stage_1(tmp_path, tower_dir, tiny_spec):
    args = QFormerArgs(
        tower=str(tower_dir),
        out=str(tmp_path / "qformer"),
        num_query_tokens=8,
        qformer_layers=1,
        grid=2,
        train_tower="positions",
        steps=150,
        batch=8,
        lr=1e-2,
        eval_scenes=16,
    )
    report = pretrain(args)
    assert report["loss_last"] < 0.95 * report["loss_first"], report
    before, after = report["held_out_before"], report["held_out_after"]
    assert after["image_variance_share"] > before["image_variance_share"] + 0.05, report
    assert after["objectness"] > before["objectness"], report
    out = tmp_path / "qformer"
    assert json.loads((out / "qformer_report.json").read_text()) == report

    # the tower's position embeddings trained beside the queries; the rest of it did not
    tower_before, tower_after = (
        Blip2VisionModel.from_pretrained(tower_dir),
        Blip2VisionModel.from_pretrained(out),
    )
    moved = {
        n
        for (n, a), (_, b) in zip(
            tower_before.named_parameters(), tower_after.named_parameters(), strict=True
        )
        if not torch.equal(a, b)
    }
    assert moved == {"embeddings.position_embedding"}

    spec = replace(tiny_spec, connector="qformer", num_query_tokens=8, qformer_layers=1, vision=str(out))
    saved = load_file(out / QFORMER_WEIGHTS)
    fresh, _ = build_model(spec)
    started, _ = build_model(replace(spec, qformer_init=str(out)))
    assert torch.equal(
        started.vision_model.embeddings.position_embedding, tower_after.embeddings.position_embedding
    )
    own = started.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items())
    assert not torch.equal(fresh.query_tokens, started.query_tokens)
    assert torch.equal(  # nothing else is touched
        fresh.language_projection.weight, started.language_projection.weight
    )
    with pytest.raises(ConfigError, match="does not fit this model"):
        build_model(replace(spec, num_query_tokens=4, qformer_init=str(out)))
    with pytest.raises(ConfigError, match="has none"):
        replace(tiny_spec, qformer_init=str(out))
