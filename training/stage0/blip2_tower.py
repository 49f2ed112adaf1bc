"""Stage 0 for the Q-Former: a BLIP-2 vision tower that computes what the CLIP tower computes.

    python -m training.stage0.blip2_tower --clip runs/toy/stage0/vision --out runs/toy/stage0/vision_blip2 \
        --image_size 128

`assistant.qformer.blip2_tower_from_clip` carries every CLIP weight over but one: CLIP normalises its embeddings
(`pre_layrnorm`) and BLIP-2's tower has no such layer. This closes the gap by distillation on toy scenes: the BLIP-2
tower, reading the whole image at `image_size`, learns to output at every patch the `feature_layer` features the CLIP
tower gives that patch inside its AnyRes tile (what the MLP connector reads), and at the class token CLIP's class
token of the base view; targets are layer-normalised, as BLIP-2's `post_layernorm` output is. The report gives the
mean cosine similarity per token to those targets on held-out scenes, before and after.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPVisionModel, HfArgumentParser
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from assistant.errors import ConfigError
from assistant.processing import CLIP_MEAN, CLIP_STD
from assistant.qformer import blip2_tower_from_clip
from assistant.threads import apply_threads
from assistant.toyworld.generate import generate_scene
from assistant.toyworld.render import render
from assistant.toyworld.scene import get_preset

from .config import HOLDOUT_BASE
from .views import normalise

log = logging.getLogger(__name__)


@dataclass
class TowerArgs:
    clip: str = field(metadata={"help": "The CLIP vision tower directory (stage 0's vision/)."})
    out: str = field(metadata={"help": "Where the BLIP-2 vision tower goes."})
    image_size: int = field(
        default=128, metadata={"help": "Image side the BLIP-2 tower reads: a multiple of CLIP's tile."}
    )
    feature_layer: int = field(default=-2, metadata={"help": "The CLIP hidden layer to reproduce."})
    steps: int = field(default=1000, metadata={"help": "Optimiser steps (0: conversion only)."})
    batch: int = field(default=16, metadata={"help": "Scenes per step."})
    lr: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate (cosine)."})
    eval_scenes: int = field(default=64, metadata={"help": "Held-out scenes for the report."})
    preset: str = field(default="tiny", metadata={"help": "Toy-world scene preset."})
    seed: int = field(default=0, metadata={"help": "Seed of scenes and batches."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: chosen by model size)."})


def scene_pixels(seeds: list[int], preset: str, size: int) -> np.ndarray:
    """(B, size, size, 3) uint8 renders of the scenes."""
    config = get_preset(preset)
    return render_pixels([generate_scene(seed, config) for seed in seeds], size)


def render_pixels(scenes: list, size: int) -> np.ndarray:
    """(B, size, size, 3) uint8: each scene rendered and resized bicubically (as the BLIP-2 processor does)."""
    images = [render(scene).convert("RGB") for scene in scenes]
    return np.stack([np.asarray(img.resize((size, size), Image.Resampling.BICUBIC)) for img in images])


@torch.no_grad()
def clip_targets(clip: CLIPVisionModel, pixels: np.ndarray, layer: int) -> torch.Tensor:
    """(B, 1 + G*G, D): per patch of the full image, CLIP's `layer` features of that patch inside its tile; first,
    the class token of the base view (the image resized to one tile). Layer-normalised, without affine."""
    b, size = pixels.shape[0], pixels.shape[1]
    tile = clip.config.image_size
    k, g = size // tile, tile // clip.config.patch_size
    base = np.stack(
        [np.asarray(Image.fromarray(p).resize((tile, tile), Image.Resampling.BICUBIC)) for p in pixels]
    )
    tiles = (
        pixels.reshape(b, k, tile, k, tile, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b * k * k, tile, tile, 3)
    )
    feats = clip(pixel_values=normalise(tiles), output_hidden_states=True).hidden_states[layer][:, 1:]
    d = feats.shape[-1]
    grid = feats.reshape(b, k, k, g, g, d).permute(0, 1, 3, 2, 4, 5).reshape(b, k * g * k * g, d)
    cls = clip(pixel_values=normalise(base), output_hidden_states=True).hidden_states[layer][:, :1]
    return F.layer_norm(torch.cat([cls, grid], dim=1), (d,))


def cosine(tower, pixels: np.ndarray, targets: torch.Tensor) -> float:
    with torch.no_grad():
        out = tower(pixel_values=normalise(pixels)).last_hidden_state
    return float(F.cosine_similarity(out, targets, dim=-1).mean())


def distill(args: TowerArgs) -> dict:
    """Convert, distill, save; returns the report (also written as OUT/blip2_tower_report.json)."""
    clip = CLIPVisionModel.from_pretrained(args.clip).eval()
    tile = clip.config.image_size
    if args.image_size % tile:
        raise ConfigError(f"image_size {args.image_size} must be a multiple of CLIP's tile {tile}")
    if not torch.cuda.is_available():
        apply_threads(clip.num_parameters(), args.threads)
    torch.manual_seed(args.seed)
    tower = blip2_tower_from_clip(clip, args.image_size, args.feature_layer)
    held_out = scene_pixels(
        list(range(HOLDOUT_BASE, HOLDOUT_BASE + args.eval_scenes)), args.preset, args.image_size
    )
    held_targets = clip_targets(clip, held_out, args.feature_layer)
    before = cosine(tower, held_out, held_targets)
    log.info(
        "converted tower: cosine %.3f to CLIP's features on %d held-out scenes", before, args.eval_scenes
    )
    optimizer = torch.optim.AdamW(tower.parameters(), lr=args.lr, weight_decay=0.0)
    start, losses = time.perf_counter(), []
    tower.train()
    for step in tqdm(range(args.steps), desc="distil BLIP-2 tower", unit="step"):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, args.steps)))
        seeds = [args.seed * 1_000_000 + step * args.batch + i for i in range(args.batch)]
        pixels = scene_pixels(seeds, args.preset, args.image_size)
        targets = clip_targets(clip, pixels, args.feature_layer)
        loss = F.mse_loss(tower(pixel_values=normalise(pixels)).last_hidden_state, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    tower.eval()
    after = cosine(tower, held_out, held_targets)
    out = Path(args.out)
    tower.save_pretrained(out)
    BlipImageProcessorPil(
        size={"height": args.image_size, "width": args.image_size}, image_mean=CLIP_MEAN, image_std=CLIP_STD
    ).save_pretrained(out)
    report = {
        "args": asdict(args),
        "cosine_before": round(before, 4),
        "cosine_after": round(after, 4),
        "loss_first": round(losses[0], 5) if losses else None,
        "loss_last": round(float(np.mean(losses[-10:])), 5) if losses else None,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "blip2_tower_report.json").write_text(json.dumps(report, indent=2))
    log.info(
        "BLIP-2 tower: cosine %.3f -> %.3f in %.0f s; saved to %s", before, after, report["seconds"], out
    )
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    distill(*HfArgumentParser(TowerArgs).parse_args_into_dataclasses())
