"""Stage 0 for the Q-Former: pretrain the query tokens and the Q-Former on the frozen BLIP-2 tower, so that they
arrive at stage 1 already reading the objects.

    python -m training.stage0.qformer --tower runs/toy/stage0/vision_blip2 --out runs/toy/stage0/qformer \
        --num_query_tokens 16 --qformer_layers 2

Without it, stage 1 starts from queries that are each a near-uniform average over the patches: their output hardly
depends on the image, and the LM learns the captions' language prior instead of reading them (docs/connectors.md).
BLIP-2 pretrains its Q-Former for 250k steps with contrastive, matching and captioning losses; the toy world has
exact ground truth instead, so here the queries are object slots. The image is cut into `grid` x `grid` cells, and
each cell owns `num_query_tokens // grid**2` queries, in row-major order: an object goes to the first free query
of the cell that holds its centre (larger objects first), and that query's output must tell, through small heads
shared by all queries, that an object is there, its shape, colour and size, and where in the cell its centre lies;
the other queries of the cell say "no object". Each object's attributes then sit together in one query token, and
the token's place in the sequence says where the object is. Objects past a cell's queries are left out (counted).

The distilled tower gives every patch the position it has inside its AnyRes tile (what CLIP saw), so patches of
different tiles look alike to a query that must find its cell; by default the tower's position embeddings train
and the rest of it at a tenth of the rate, beside the Q-Former (`--train_tower all`; `positions`: only those;
`none`). Measured on the toy tower (1,500 steps, 128 held-out scenes, docs/connectors.md): slot shape / colour
0.56 / 0.59 with the tower frozen, 0.82 / 0.88 with its positions trained, 0.86 / 0.89 with all of it.
OUT is then a BLIP-2 vision tower directory (the tower the queries learnt to read, trained or not) with the
Q-Former's weights beside it (`qformer.safetensors`): stage 1 takes it as both `vision` and `qformer_init`.

The report (OUT/qformer_report.json) gives, on held-out scenes, how well the heads read the slots before and after
(objectness, shape, colour and size on occupied slots, the count as the number of slots that say "object") and how
much the query outputs vary across images against across queries.
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
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import Blip2QFormerModel, Blip2VisionModel, HfArgumentParser
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from assistant.errors import ConfigError
from assistant.qformer import QFORMER_WEIGHTS, qformer_config
from assistant.threads import apply_threads
from assistant.toyworld import COLORS, SHAPES
from assistant.toyworld.generate import generate_scene
from assistant.toyworld.scene import Scene, get_preset
from assistant.toyworld.vocab import SIZES

from .blip2_tower import render_pixels
from .config import HOLDOUT_BASE
from .views import normalise

log = logging.getLogger(__name__)
COLOR_NAMES = tuple(COLORS)


@dataclass
class QFormerArgs:
    tower: str = field(
        metadata={"help": "The BLIP-2 vision tower directory (training/stage0/blip2_tower.py)."}
    )
    out: str = field(metadata={"help": f"Where the Q-Former goes ({QFORMER_WEIGHTS} + report)."})
    num_query_tokens: int = field(
        default=16, metadata={"help": "Query tokens: a multiple of grid**2 (the toy config: 16)."}
    )
    qformer_layers: int = field(default=2, metadata={"help": "Q-Former layers."})
    qformer_hidden: int | None = field(
        default=None, metadata={"help": "Q-Former width (default: the tower's)."}
    )
    qformer_heads: int | None = field(
        default=None, metadata={"help": "Q-Former heads (default: the tower's)."}
    )
    grid: int = field(
        default=4, metadata={"help": "Cells per image side; each owns num_query_tokens/grid**2."}
    )
    train_tower: str = field(
        default="all",
        metadata={
            "help": "What of the tower trains beside the Q-Former: none, positions (its position embeddings, at the "
            "full rate) or all (positions at the full rate, the rest at a tenth)."
        },
    )
    steps: int = field(default=1500, metadata={"help": "Optimiser steps."})
    batch: int = field(default=16, metadata={"help": "Scenes per step."})
    lr: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate (cosine)."})
    eval_scenes: int = field(default=128, metadata={"help": "Held-out scenes for the report."})
    preset: str = field(default="tiny", metadata={"help": "Toy-world scene preset."})
    seed: int = field(default=0, metadata={"help": "Seed of scenes, batches and initialisation."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: chosen by model size)."})

    def __post_init__(self) -> None:
        if self.train_tower not in ("none", "positions", "all"):
            raise ConfigError(f"train_tower must be none, positions or all, got {self.train_tower!r}")
        cells = self.grid * self.grid
        if self.grid < 1 or self.num_query_tokens % cells:
            raise ConfigError(
                f"num_query_tokens {self.num_query_tokens} is not a multiple of grid**2 = {cells}; "
                "choose a grid whose square divides it (e.g. --grid 4 for 16, 32 or 64 queries)"
            )


class SlotQFormer(nn.Module):
    """The query tokens and Q-Former of a BLIP-2 model (same parameter names), with the slot heads."""

    def __init__(self, tower_config, args: QFormerArgs) -> None:
        super().__init__()
        config = qformer_config(
            tower_config, args.num_query_tokens, args.qformer_layers, args.qformer_hidden, args.qformer_heads
        )
        self.qformer = Blip2QFormerModel(config)
        self.query_tokens = nn.Parameter(
            torch.randn(1, args.num_query_tokens, config.hidden_size) * config.initializer_range
        )
        d = config.hidden_size
        self.norm = nn.LayerNorm(d)
        self.objectness = nn.Linear(d, 1)
        self.shape = nn.Linear(d, len(SHAPES))
        self.color = nn.Linear(d, len(COLOR_NAMES))
        self.size = nn.Linear(d, len(SIZES))
        self.offset = nn.Linear(d, 2)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """(B, P, D_vision) -> (B, Q, D): BLIP-2's query output (get_image_features before the projection)."""
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        return self.qformer(
            query_embeds=self.query_tokens.expand(image_embeds.shape[0], -1, -1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=mask,
            return_dict=True,
        ).last_hidden_state

    def heads(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.norm(out)
        return {
            "objectness": self.objectness(h).squeeze(-1),
            "shape": self.shape(h),
            "color": self.color(h),
            "size": self.size(h),
            "offset": self.offset(h).sigmoid(),
        }

    def weights(self) -> dict[str, torch.Tensor]:
        """What a BLIP-2 model loads (assistant.qformer.load_pretrained_qformer)."""
        state = {"query_tokens": self.query_tokens.detach()}
        state.update({f"qformer.{k}": v.detach() for k, v in self.qformer.state_dict().items()})
        return {k: v.contiguous() for k, v in state.items()}


def slot_targets(scenes: list[Scene], num_queries: int, grid: int) -> tuple[dict[str, torch.Tensor], int]:
    """Per scene and query: objectness, shape, colour, size (-100 where no object), centre offset in its cell;
    and how many objects found no free query in their cell."""
    depth = num_queries // (grid * grid)
    b = len(scenes)
    t = {
        "objectness": torch.zeros(b, num_queries),
        "shape": torch.full((b, num_queries), -100),
        "color": torch.full((b, num_queries), -100),
        "size": torch.full((b, num_queries), -100),
        "offset": torch.zeros(b, num_queries, 2),
    }
    overflow = 0
    for i, scene in enumerate(scenes):
        used: dict[int, int] = {}
        for obj in sorted(scene.objects, key=lambda o: -o.area):
            cx, cy = obj.center
            fx, fy = cx / scene.width * grid, cy / scene.height * grid
            col, row = min(grid - 1, int(fx)), min(grid - 1, int(fy))
            cell = row * grid + col
            d = used.get(cell, 0)
            if d >= depth:
                overflow += 1
                continue
            used[cell] = d + 1
            q = cell * depth + d
            t["objectness"][i, q] = 1.0
            t["shape"][i, q] = SHAPES.index(obj.shape)
            t["color"][i, q] = COLOR_NAMES.index(obj.color)
            t["size"][i, q] = SIZES.index(obj.size)
            t["offset"][i, q] = torch.tensor([fx - col, fy - row])
    return t, overflow


def slot_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    occupied = target["objectness"] > 0
    loss = F.binary_cross_entropy_with_logits(pred["objectness"], target["objectness"])
    for key in ("shape", "color", "size"):
        loss = loss + F.cross_entropy(pred[key].flatten(0, 1), target[key].flatten(), ignore_index=-100)
    if occupied.any():
        loss = loss + F.l1_loss(pred["offset"][occupied], target["offset"][occupied])
    return loss


class SceneImages:
    """Toy scenes rendered at the tower's size, as the BLIP-2 processor gives them (bicubic, CLIP mean/std)."""

    def __init__(self, preset: str, size: int) -> None:
        self.config, self.size = get_preset(preset), size

    def __call__(self, seeds: list[int]) -> tuple[list[Scene], torch.Tensor]:
        scenes = [generate_scene(seed, self.config) for seed in seeds]
        return scenes, normalise(render_pixels(scenes, self.size))


@torch.no_grad()
def evaluate(
    model: SlotQFormer, embeds: torch.Tensor, target: dict[str, torch.Tensor], n_objects: list[int]
) -> dict:
    model.eval()
    out = model(embeds)
    pred = model.heads(out)
    occupied = target["objectness"] > 0
    said = pred["objectness"] > 0
    report = {"objectness": float((said == occupied).float().mean())}
    for key in ("shape", "color", "size"):
        report[key] = float((pred[key].argmax(-1)[occupied] == target[key][occupied]).float().mean())
    report["count"] = float((said.sum(-1) == torch.tensor(n_objects)).float().mean())
    # share of the outputs' variance that depends on the image (1: all of it; near 0: a constant per query)
    across_images = out.var(dim=0).mean()
    report["image_variance_share"] = float(
        across_images / (across_images + out.mean(dim=0).var(dim=0).mean())
    )
    model.train()
    return {k: round(v, 4) for k, v in report.items()}


def pretrain(args: QFormerArgs) -> dict:
    """Pretrain, save; returns the report (also written as OUT/qformer_report.json)."""
    tower = Blip2VisionModel.from_pretrained(args.tower).eval().requires_grad_(False)
    positions = tower.embeddings.position_embedding
    others = [p for n, p in tower.named_parameters() if n != "embeddings.position_embedding"]
    if args.train_tower != "none":
        positions.requires_grad_(True)
    if args.train_tower == "all":
        for p in others:
            p.requires_grad_(True)
    if not torch.cuda.is_available():
        apply_threads(tower.num_parameters(), args.threads)
    torch.manual_seed(args.seed)
    model = SlotQFormer(tower.config, args)
    images = SceneImages(args.preset, tower.config.image_size)

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(args.train_tower != "none" and torch.is_grad_enabled()):
            return tower(pixel_values=pixels).last_hidden_state

    held_scenes, held_pixels = images(list(range(HOLDOUT_BASE, HOLDOUT_BASE + args.eval_scenes)))
    held_target, _ = slot_targets(held_scenes, args.num_query_tokens, args.grid)
    held_counts = [len(s.objects) for s in held_scenes]
    with torch.no_grad():
        before = evaluate(model, embed(held_pixels), held_target, held_counts)
    groups = [{"params": list(model.parameters()), "scale": 1.0}]
    if args.train_tower != "none":
        groups.append({"params": [positions], "scale": 1.0, "weight_decay": 0.0})
    if args.train_tower == "all":
        groups.append({"params": others, "scale": 0.1})
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01)
    start, losses, overflow, objects = time.perf_counter(), [], 0, 0
    model.train()
    for step in tqdm(range(args.steps), desc="pretrain Q-Former slots", unit="step"):
        for group in optimizer.param_groups:
            warm = min(1.0, (step + 1) / max(1, args.steps // 20))
            cosine = 0.5 * (1 + math.cos(math.pi * step / max(1, args.steps)))
            group["lr"] = args.lr * group["scale"] * warm * cosine
        seeds = [args.seed * 1_000_000 + step * args.batch + i for i in range(args.batch)]
        scenes, pixels = images(seeds)
        target, left_out = slot_targets(scenes, args.num_query_tokens, args.grid)
        overflow, objects = overflow + left_out, objects + sum(len(s.objects) for s in scenes)
        loss = slot_loss(model.heads(model(embed(pixels))), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    tower.eval()
    with torch.no_grad():
        after = evaluate(model, embed(held_pixels), held_target, held_counts)
    out = Path(args.out)
    tower.requires_grad_(False).save_pretrained(out)  # the tower the queries learnt to read (trained or not)
    BlipImageProcessorPil.from_pretrained(args.tower).save_pretrained(out)
    save_file(model.weights(), out / QFORMER_WEIGHTS)
    report = {
        "args": asdict(args),
        "held_out_before": before,
        "held_out_after": after,
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-20:])), 4) if losses else None,
        "objects_left_out": overflow,
        "objects_seen": objects,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "qformer_report.json").write_text(json.dumps(report, indent=2))
    log.info(
        "Q-Former slots on %d held-out scenes: shape %.2f -> %.2f, colour %.2f -> %.2f, count %.2f -> %.2f, "
        "image share of the output variance %.2f -> %.2f (%.0f s); saved to %s",
        args.eval_scenes,
        before["shape"],
        after["shape"],
        before["color"],
        after["color"],
        before["count"],
        after["count"],
        before["image_variance_share"],
        after["image_variance_share"],
        report["seconds"],
        out,
    )
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pretrain(*HfArgumentParser(QFormerArgs).parse_args_into_dataclasses())
