"""Train the stage-0 CLIP vision encoder: a dense ground-truth loss plus contrastive captions.

Per step, B scenes give B x V views (base view + tiles). Losses:
- dense, on the patch tokens of `vision_feature_layer` (the hidden layer LLaVA reads): per patch
  objectness, shape, colour and "an object's centre is here" (with `position_weight`, also the patch's own place
  in its view; with `size_weight`, its object's size as it appears in the view), plus the view's object count; per
  object, from the mean of its patches, shape and colour;
- contrastive (InfoNCE, or SigLIP's sigmoid loss) between pooled last-layer tokens and canonical captions,
  per view and per scene, with hard-negative captions that differ from the truth in one attribute.
The text tower and poolers are training-only heads, saved apart from the HF vision directory.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from assistant.processing import CLIP_MEAN, CLIP_STD
from assistant.toyworld import COLORS, SHAPES
from assistant.toyworld.scene import SceneConfig

from .captions import CaptionEncoder, caption_of, hard_negative
from .config import HOLDOUT_BASE, VisionArgs
from .views import IGNORE, ViewBatch, ViewGeometry, make_batch, view_pairs

log = logging.getLogger(__name__)
MAX_COUNT = 8  # count classes 0..MAX_COUNT-1


def build_encoder(args: VisionArgs) -> CLIPVisionModel:
    config = CLIPVisionConfig(
        hidden_size=args.vision_hidden,
        intermediate_size=4 * args.vision_hidden,
        num_hidden_layers=args.vision_layers,
        num_attention_heads=args.vision_heads,
        image_size=args.vision_tile,
        patch_size=args.vision_patch,
        projection_dim=args.embed_dim,
    )
    model = CLIPVisionModel(config)
    init_sincos_positions(model)
    if args.luminance_init:
        init_luminance_patches(model, args.luminance_init)
    return model


@torch.no_grad()
def init_luminance_patches(model: CLIPVisionModel, fraction: float) -> None:
    """Start `fraction` of the patch-embedding filters colour-blind: one random spatial filter applied to
    the luminance (the same on R, G and B, undoing CLIP's per-channel std). Every toy-world object is
    darker than its background, so these filters see an object's silhouette whatever its colour."""
    conv = next(m for n, m in model.named_modules() if n.endswith("embeddings.patch_embedding"))
    w = conv.weight  # (D, 3, p, p)
    k = int(fraction * w.shape[0])
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    spatial = w[:k].mean(dim=1, keepdim=True) * 3**0.5  # (k, 1, p, p), same scale as the random init
    w[:k] = spatial * std / std.mean()


@torch.no_grad()
def init_sincos_positions(model: CLIPVisionModel) -> None:
    """Start the learned position embeddings at 2-D sine-cosine values (as MAE does), CLS at zero:
    from scratch, learned positions are slow to order patches, and shape needs their arrangement."""
    table_module = next(m for n, m in model.named_modules() if n.endswith("embeddings.position_embedding"))
    emb = table_module.weight  # (1 + G*G, D)
    d = emb.shape[1]
    g = int(round((emb.shape[0] - 1) ** 0.5))
    freqs = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float) / (d // 4))  # (D/4,)
    ys, xs = torch.meshgrid(
        torch.arange(g, dtype=torch.float), torch.arange(g, dtype=torch.float), indexing="ij"
    )
    parts = [f(c.flatten()[:, None] * freqs) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    table = torch.cat(parts, dim=1)  # (G*G, D)
    emb.zero_()
    emb[1:, : table.shape[1]] = table


class TokenPool(nn.Module):
    """Tokens -> one embedding: a per-token MLP, then the mean (a Deep-Sets pool that keeps bindings)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, out_dim)
        )
        self.out = nn.Linear(out_dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(tokens).mean(dim=-2))  # (..., T, D) -> (..., E)


class Stage0Heads(nn.Module):
    """Everything stage 0 trains besides the encoder: dense heads, poolers, text tower, temperature."""

    def __init__(self, args: VisionArgs) -> None:
        super().__init__()
        d = args.vision_hidden
        self.dense_norm = nn.LayerNorm(d)
        self.dense = nn.Linear(d, 2 + len(SHAPES) + len(COLORS))  # objectness, centre, shape, colour
        self.count = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, MAX_COUNT))
        self.silhouette = nn.Linear(d, args.silhouette_cells**2)
        self.part = nn.Linear(d, 9)
        if args.position_weight:  # a patch's place in its view (absent from heads saved before it existed)
            self.place = nn.Linear(d, (args.vision_tile // args.vision_patch) ** 2)
        self.object = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, len(SHAPES) + len(COLORS)))
        # per patch, its object's apparent size (absent from heads saved before it existed)
        if args.size_weight:
            self.size = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))
        self.view_pool = TokenPool(d, args.embed_dim)
        self.scene_pool = TokenPool(d, args.embed_dim)
        self.text = CaptionEncoder(args.embed_dim, args.embed_dim)
        siglip = args.contrastive_loss == "siglip"
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0 if siglip else 1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0 if siglip else 0.0), requires_grad=siglip)


def contrastive_loss(
    img: torch.Tensor, txt: torch.Tensor, texts: list[str], heads: Stage0Heads, kind: str
) -> torch.Tensor:
    """img (N, E) against txt (M, E), M >= N: the first N texts are the positives, the rest hard negatives.

    Texts equal to an image's own caption are positives too (duplicates are common: "no objects")."""
    n = img.shape[0]
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = heads.logit_scale.exp().clamp(max=100) * img @ txt.T  # (N, M)
    same = torch.tensor([[a == b for b in texts] for a in texts[:n]])  # (N, M)
    own = torch.zeros_like(same)
    own[:, :n] = torch.eye(n, dtype=torch.bool)
    if kind == "siglip":
        sign = same.float() * 2 - 1
        return -F.logsigmoid(sign * (logits + heads.logit_bias)).sum() / n
    masked = logits.masked_fill(same & ~own, float("-inf"))
    target = torch.arange(n)
    i2t = F.cross_entropy(masked, target)
    t2i = F.cross_entropy(masked[:, :n].T, target)
    return (i2t + t2i) / 2


def dense_losses(feats: torch.Tensor, batch: ViewBatch, heads: Stage0Heads) -> dict[str, torch.Tensor]:
    """feats (B*V, P, D): patch tokens of the layer LLaVA reads."""
    out = heads.dense(heads.dense_norm(feats))  # (B*V, P, 2 + S + C)
    s = len(SHAPES)
    obj, centre = out[..., 0], out[..., 1]
    shape, color = out[..., 2 : 2 + s], out[..., 2 + s :]
    count = heads.count(feats.mean(dim=1))  # (B*V, MAX_COUNT)
    silhouette = heads.silhouette(heads.dense_norm(feats))  # (B*V, P, M*M)
    optional = {}
    if hasattr(
        heads, "size"
    ):  # log2 of its object's side in view patches: the view's own scale, never ambiguous
        keep = batch.owner.flatten(0, 1).ge(0)
        pred = heads.size(feats).squeeze(-1)  # (B*V, P)
        optional["size"] = F.mse_loss(pred[keep], batch.extent.flatten(0, 1)[keep])
    if hasattr(heads, "place"):
        slots = torch.arange(feats.shape[1], device=feats.device).expand(feats.shape[0], -1)
        optional["place"] = F.cross_entropy(
            heads.place(heads.dense_norm(feats)).flatten(0, 1), slots.flatten()
        )
    return optional | {
        "silhouette": F.binary_cross_entropy_with_logits(silhouette, batch.silhouette.flatten(0, 1)),
        "part": F.cross_entropy(
            heads.part(heads.dense_norm(feats)).flatten(0, 1), batch.part.flatten(), ignore_index=IGNORE
        ),
        "objectness": F.binary_cross_entropy_with_logits(obj, batch.objectness.flatten(0, 1).float()),
        "centre": F.binary_cross_entropy_with_logits(centre, batch.centre.flatten(0, 1).float()),
        "shape": F.cross_entropy(shape.flatten(0, 1), batch.shape.flatten(), ignore_index=IGNORE),
        "color": F.cross_entropy(color.flatten(0, 1), batch.color.flatten(), ignore_index=IGNORE),
        "count": F.cross_entropy(count, batch.count.flatten().clamp(max=MAX_COUNT - 1)),
    }


def object_losses(feats: torch.Tensor, batch: ViewBatch, heads: Stage0Heads) -> dict[str, torch.Tensor]:
    """Shape and colour of each object in each view from the mean of the patch tokens it covers."""
    bv, p, d = feats.shape
    owner = batch.owner.flatten(0, 1)  # (B*V, P)
    keep = owner.ge(0)
    key = (torch.arange(bv).unsqueeze(1) * 64 + owner)[keep]  # one key per (view, object)
    uniq, inv = key.unique(return_inverse=True)
    # Pool by a membership matmul over all tokens: gathering tokens by a mask (or index_add) has a backward
    # that sums in a varying order on 2+ threads, and stage 0 must give the same weights every run.
    member = torch.zeros(len(uniq), bv * p)  # (O, B*V*P)
    member[inv, keep.flatten().nonzero().squeeze(1)] = 1.0
    pooled = member @ feats.reshape(bv * p, d) / member.sum(1, keepdim=True)  # (O, D)
    shape = torch.zeros(len(uniq), dtype=torch.long).scatter(0, inv, batch.shape.flatten(0, 1)[keep])
    color = torch.zeros(len(uniq), dtype=torch.long).scatter(0, inv, batch.color.flatten(0, 1)[keep])
    logits = heads.object(pooled)  # (O, S + C)
    s = len(SHAPES)
    return {
        "object_shape": F.cross_entropy(logits[:, :s], shape),
        "object_color": F.cross_entropy(logits[:, s:], color),
    }


def captions_for(batch: ViewBatch, rng: random.Random, negatives: int) -> tuple[list[str], list[str]]:
    """(scene texts, view texts): positives first, then `negatives` hard negatives per positive."""
    scene_pairs = [view_pairs(s, list(range(len(s.objects)))) for s in batch.scenes]
    view_pairs_ = [
        view_pairs(s, idx) for s, views in zip(batch.scenes, batch.view_objects, strict=True) for idx in views
    ]
    out = []
    for pairs in (scene_pairs, view_pairs_):
        pos = [caption_of(p) for p in pairs]
        neg = [caption_of(hard_negative(p, rng)) for _ in range(negatives) for p in pairs]
        out.append(pos + neg)
    return out[0], out[1]


def encode_views(
    encoder: CLIPVisionModel, pixels: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """pixels (N, 3, T, T) -> (patch tokens of `layer` (N, P, D), last-layer tokens (N, P + 1, D))."""
    out = encoder(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:], out.last_hidden_state


@dataclass
class VisionResult:
    encoder: CLIPVisionModel
    heads: Stage0Heads
    losses: dict[str, list[float]] = field(default_factory=dict)  # name -> per-step values
    seconds: float = 0.0
    views_per_s: float = 0.0


def _schedule(step: int, total: int) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return (step + 1) / warm
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train_vision(args: VisionArgs, config: SceneConfig, seed: int, seed_start: int = 0) -> VisionResult:
    """Train an encoder on fresh scenes `seed_start, seed_start + 1, ...` (one pass, no repeats)."""
    size = config.sizes[0]
    geo = ViewGeometry(size[0], size[1], args.vision_tile, args.vision_patch, cells=args.silhouette_cells)
    last_seed = seed_start + args.vision_steps * args.vision_batch
    if last_seed > HOLDOUT_BASE:
        raise ValueError(
            f"training scenes would reach the held-out seeds ({HOLDOUT_BASE}); lower the steps or seed"
        )
    torch.manual_seed(seed)
    rng = random.Random(seed)
    encoder, heads = build_encoder(args), Stage0Heads(args)
    params = [*encoder.parameters(), *heads.parameters()]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2 and p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
        lr=args.vision_lr,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, args.vision_steps))
    result = VisionResult(encoder, heads)
    start = time.perf_counter()
    encoder.train()
    bar = tqdm(range(args.vision_steps), desc="stage0 vision", mininterval=5)
    for step in bar:
        seeds = list(
            range(seed_start + step * args.vision_batch, seed_start + (step + 1) * args.vision_batch)
        )
        batch = make_batch(seeds, config, geo)
        b, v = batch.pixels.shape[:2]
        feats, last = encode_views(encoder, batch.pixels.flatten(0, 1), args.vision_feature_layer)
        losses = dense_losses(feats, batch, heads)
        if args.object_weight:
            losses |= object_losses(feats, batch, heads)
        scene_txt, view_txt = captions_for(batch, rng, args.hard_negatives)
        view_emb = heads.view_pool(last)  # (B*V, E)
        scene_emb = heads.scene_pool(last.reshape(b, v * last.shape[1], -1))  # (B, E)
        losses["clip_view"] = contrastive_loss(
            view_emb, heads.text(view_txt), view_txt, heads, args.contrastive_loss
        )
        losses["clip_scene"] = contrastive_loss(
            scene_emb, heads.text(scene_txt), scene_txt, heads, args.contrastive_loss
        )
        dense = sum(losses[k] for k in ("objectness", "centre", "color", "count", "silhouette", "part"))
        dense = dense + args.shape_weight * losses["shape"]
        if args.position_weight:
            dense = dense + args.position_weight * losses["place"]
        if args.object_weight:
            dense = dense + args.object_weight * (
                args.shape_weight * losses["object_shape"] + losses["object_color"]
            )
        if args.size_weight:
            dense = dense + args.size_weight * losses["size"]
        total = args.dense_weight * dense + args.contrastive_weight * (
            losses["clip_view"] + losses["clip_scene"]
        )
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses["total"] = total
        for k, val in losses.items():
            result.losses.setdefault(k, []).append(round(float(val.detach()), 5))
        if step % 20 == 0:
            bar.set_postfix(total=result.losses["total"][-1], shape=result.losses["shape"][-1])
    result.seconds = time.perf_counter() - start
    result.views_per_s = args.vision_steps * args.vision_batch * geo.num_views / result.seconds
    encoder.eval()
    log.info(
        "vision encoder: %d steps in %.0f s (%.0f views/s)",
        args.vision_steps,
        result.seconds,
        result.views_per_s,
    )
    return result


def image_processor(args: VisionArgs) -> CLIPImageProcessorPil:
    t = args.vision_tile
    return CLIPImageProcessorPil(
        size={"shortest_edge": t},
        crop_size={"height": t, "width": t},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_center_crop=True,
    )


def save_vision(result: VisionResult, args: VisionArgs, out: Path, heads_path: Path) -> Path:
    """The encoder as a standard HF CLIP vision directory (+ image processor); heads to `heads_path`."""
    result.encoder.save_pretrained(out)
    image_processor(args).save_pretrained(out)
    torch.save({"args": vars(args), "state_dict": result.heads.state_dict()}, heads_path)
    return out


def load_heads(path: Path) -> tuple[Stage0Heads, VisionArgs]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    args = VisionArgs(**saved["args"])
    heads = Stage0Heads(args)
    heads.load_state_dict(saved["state_dict"])
    return heads.eval(), args
