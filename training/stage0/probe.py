"""Probe a frozen vision encoder: what do the features LLaVA will read carry about each view?

    python -m training.stage0.probe --vision OUT/vision [--heads OUT/vision_heads.pt] [--out probe.json]

On held-out scenes (seeds from HOLDOUT_BASE, never trained on), the patch tokens of `layer` for the base
view and every tile are extracted; small 1-hidden-layer MLP probes are fit on 80% of the scenes and
scored on the rest:
- shape / colour: per object in a view (8-way), from the mean of the patch tokens the object covers;
- count: per view, the objects visible in it (see `views`), from the view's mean- and max-pooled tokens;
  count_centre: the objects whose centre lies in it (ambiguous for objects cut by a tile border);
- shape_set / color_set: per view, the exact set of shapes / colours present (same pooled input).
The same probes on a randomly initialised encoder of the same shape are the baseline. With the
contrastive heads, image-to-caption top-1 retrieval is scored on other held-out scenes against their
captions plus one hard negative each (a caption that differs in one attribute).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel, HfArgumentParser

from assistant.toyworld import COLORS, SHAPES, get_preset
from assistant.toyworld.scene import SceneConfig
from assistant.toyworld.vocab import SIZES

from .captions import caption_of, hard_negative
from .config import HOLDOUT_BASE
from .views import ViewBatch, ViewGeometry, make_batch, view_pairs

log = logging.getLogger(__name__)
RETRIEVAL_OFFSET = 500_000  # retrieval scenes: HOLDOUT_BASE + RETRIEVAL_OFFSET + i


def geometry(encoder: CLIPVisionModel, config: SceneConfig) -> ViewGeometry:
    w, h = config.sizes[0]
    return ViewGeometry(w, h, encoder.config.image_size, encoder.config.patch_size)


@torch.no_grad()
def encode(
    encoder: CLIPVisionModel, seeds: list[int], config: SceneConfig, layer: int, batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor, list[ViewBatch]]:
    """Patch tokens of `layer` (N, V, P, D), last-layer tokens (N, V, P + 1, D) and the labelled batches."""
    geo = geometry(encoder, config)
    feats, lasts, batches = [], [], []
    for i in range(0, len(seeds), batch):
        vb = make_batch(seeds[i : i + batch], config, geo)
        b, v = vb.pixels.shape[:2]
        out = encoder(pixel_values=vb.pixels.flatten(0, 1), output_hidden_states=True)
        feats.append(out.hidden_states[layer][:, 1:].reshape(b, v, -1, out.last_hidden_state.shape[-1]))
        lasts.append(out.last_hidden_state.reshape(b, v, *out.last_hidden_state.shape[1:]))
        batches.append(vb)
    return torch.cat(feats), torch.cat(lasts), batches


@dataclass
class ProbeData:
    """Probe inputs and labels, each with the view index (0 = base view) of its sample."""

    obj_x: torch.Tensor  # (O, D)
    obj_shape: torch.Tensor  # (O,)
    obj_color: torch.Tensor  # (O,)
    obj_size: torch.Tensor  # (O,) small, medium, large
    obj_view: torch.Tensor  # (O,)
    obj_scene: torch.Tensor  # (O,) index of the scene
    view_x: torch.Tensor  # (N*V, 2D) mean and max pooled
    view_count: torch.Tensor  # (N*V,) visible objects
    view_centres: torch.Tensor  # (N*V,) object centres
    view_shapes: torch.Tensor  # (N*V, S) multi-hot
    view_colors: torch.Tensor  # (N*V, C) multi-hot
    view_view: torch.Tensor  # (N*V,)


def probe_data(feats: torch.Tensor, batches: list[ViewBatch]) -> ProbeData:
    owner = torch.cat([b.owner for b in batches])  # (N, V, P)
    scenes = [s for b in batches for s in b.scenes]
    inside = [o for b in batches for o in b.view_objects]
    n, v, p, _ = feats.shape
    xs, shapes, colors, sizes, views, scene_of = [], [], [], [], [], []
    v_shapes, v_colors = torch.zeros(n, v, len(SHAPES)), torch.zeros(n, v, len(COLORS))
    for s, scene in enumerate(scenes):
        for view in range(v):
            for i in inside[s][view]:
                mask = owner[s, view].eq(i)
                if not mask.any():  # too small or cut to label a patch: skip (rare)
                    continue
                obj = scene.objects[i]
                xs.append(feats[s, view][mask].mean(0))
                shapes.append(SHAPES.index(obj.shape))
                colors.append(list(COLORS).index(obj.color))
                sizes.append(SIZES.index(obj.size))
                views.append(view)
                scene_of.append(s)
                v_shapes[s, view, SHAPES.index(obj.shape)] = 1
                v_colors[s, view, list(COLORS).index(obj.color)] = 1
    pooled = torch.cat([feats.mean(2), feats.amax(2)], dim=-1)  # (N, V, 2D)
    centres = torch.tensor([[len(o) for o in views_] for views_ in inside])
    return ProbeData(
        obj_x=torch.stack(xs),
        obj_shape=torch.tensor(shapes),
        obj_color=torch.tensor(colors),
        obj_size=torch.tensor(sizes),
        obj_view=torch.tensor(views),
        obj_scene=torch.tensor(scene_of),
        view_x=pooled.flatten(0, 1),
        view_count=torch.cat([b.count for b in batches]).flatten(),
        view_centres=centres.flatten(),
        view_shapes=v_shapes.flatten(0, 1),
        view_colors=v_colors.flatten(0, 1),
        view_view=torch.arange(v).repeat(n),
    )


def fit_probe(
    x: torch.Tensor, y: torch.Tensor, out_dim: int, steps: int, multilabel: bool = False
) -> nn.Module:
    """A 1-hidden-layer MLP on standardised features, full-batch AdamW."""
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-5)
    mlp = nn.Sequential(nn.Linear(x.shape[1], 256), nn.GELU(), nn.Linear(256, out_dim))
    opt = torch.optim.AdamW(mlp.parameters(), lr=3e-3, weight_decay=1e-2)
    z = (x - mean) / std
    for _ in range(steps):
        logits = mlp(z)
        loss = F.binary_cross_entropy_with_logits(logits, y) if multilabel else F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return nn.Sequential(_Standardise(mean, std), mlp).eval()


class _Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@torch.no_grad()
def _scores(pred: torch.Tensor, y: torch.Tensor, view: torch.Tensor) -> dict[str, float]:
    ok = pred.eq(y) if pred.ndim == 1 else pred.eq(y).all(dim=1)
    base, tiles = view.eq(0), view.gt(0)
    return {
        "all": round(ok.float().mean().item(), 4),
        "base": round(ok[base].float().mean().item(), 4) if base.any() else float("nan"),
        "tiles": round(ok[tiles].float().mean().item(), 4) if tiles.any() else float("nan"),
    }


def run_probes(data: ProbeData, n_fit: int, v: int, steps: int) -> dict[str, dict]:
    """Fit on scenes < n_fit, score on the rest; each result also has the majority-class baseline."""
    results: dict[str, dict] = {}
    fit, test = data.obj_scene < n_fit, data.obj_scene >= n_fit
    objects = (
        ("shape", data.obj_shape, len(SHAPES)),
        ("color", data.obj_color, len(COLORS)),
        ("size", data.obj_size, len(SIZES)),
    )
    for name, y, k in objects:
        probe = fit_probe(data.obj_x[fit], y[fit], k, steps)
        with torch.no_grad():
            pred = probe(data.obj_x[test]).argmax(-1)
        results[name] = _scores(pred, y[test], data.obj_view[test])
        results[name]["majority"] = round(y[test].eq(y[fit].mode().values).float().mean().item(), 4)
    view_scene = torch.arange(len(data.view_count)) // v
    fit, test = view_scene < n_fit, view_scene >= n_fit
    for name, y in (("count", data.view_count), ("count_centre", data.view_centres)):
        probe = fit_probe(data.view_x[fit], y[fit], int(y.max()) + 1, steps)
        with torch.no_grad():
            pred = probe(data.view_x[test]).argmax(-1)
        results[name] = _scores(pred, y[test], data.view_view[test])
        results[name]["majority"] = round(y[test].eq(y[fit].mode().values).float().mean().item(), 4)
    for name, y in (("shape_set", data.view_shapes), ("color_set", data.view_colors)):
        probe = fit_probe(data.view_x[fit], y[fit], y.shape[1], steps, multilabel=True)
        with torch.no_grad():
            pred = probe(data.view_x[test]).gt(0).float()
        results[name] = _scores(pred, y[test], data.view_view[test])
    return results


def probe_encoder(
    encoder: CLIPVisionModel, config: SceneConfig, scenes: int, steps: int, layer: int
) -> dict[str, dict]:
    """Probe accuracies of `encoder` on `scenes` held-out scenes (80% fit, 20% scored)."""
    seeds = [HOLDOUT_BASE + i for i in range(scenes)]
    feats, _, batches = encode(encoder, seeds, config, layer)
    return run_probes(probe_data(feats, batches), int(0.8 * scenes), feats.shape[1], steps)


@torch.no_grad()
def retrieval(
    encoder: CLIPVisionModel, heads: nn.Module, config: SceneConfig, scenes: int
) -> dict[str, float]:
    """Image-to-caption top-1 over the scenes' captions plus one hard negative per scene (deduplicated)."""
    seeds = [HOLDOUT_BASE + RETRIEVAL_OFFSET + i for i in range(scenes)]
    _, last, batches = encode(encoder, seeds, config, layer=-1)
    truth = [caption_of(view_pairs(s, list(range(len(s.objects))))) for b in batches for s in b.scenes]
    rng = random.Random(0)
    negatives = [
        caption_of(hard_negative(view_pairs(s, list(range(len(s.objects)))), rng))
        for b in batches
        for s in b.scenes
    ]
    candidates = list(dict.fromkeys(truth + negatives))
    img = F.normalize(heads.scene_pool(last.flatten(1, 2)), dim=-1)  # (N, E)
    txt = F.normalize(heads.text(candidates), dim=-1)  # (M, E)
    best = (img @ txt.T).argmax(-1)
    top1 = sum(candidates[j] == t for j, t in zip(best.tolist(), truth, strict=True)) / len(truth)
    own_vs_neg = (img * F.normalize(heads.text(truth), dim=-1)).sum(-1) > (
        img * F.normalize(heads.text(negatives), dim=-1)
    ).sum(-1)
    return {
        "top1": round(top1, 4),
        "candidates": len(candidates),
        "beats_own_hard_negative": round(own_vs_neg.float().mean().item(), 4),
    }


@dataclass
class ProbeCLI:
    vision: str = field(
        metadata={"help": "A CLIP vision directory (e.g. OUT/vision from training/bootstrap.py)."}
    )
    heads: str | None = field(
        default=None, metadata={"help": "Contrastive heads (OUT/vision_heads.pt) for retrieval."}
    )
    preset: str = field(default="tiny", metadata={"help": "Toy-world preset of the scenes."})
    scenes: int = field(default=2000, metadata={"help": "Held-out scenes for the probes."})
    steps: int = field(default=400, metadata={"help": "Optimiser steps per probe."})
    retrieval_scenes: int = field(default=200, metadata={"help": "Held-out scenes for retrieval."})
    layer: int = field(default=-2, metadata={"help": "Hidden layer to probe (LLaVA's vision_feature_layer)."})
    random_init: bool = field(
        default=True, metadata={"help": "Also probe a random-init encoder of the same shape."}
    )
    out: str | None = field(default=None, metadata={"help": "Write the results as JSON here."})


def main(cli: ProbeCLI) -> dict:
    config = get_preset(cli.preset)
    encoder = CLIPVisionModel.from_pretrained(cli.vision).eval()
    report: dict = {
        "layer": cli.layer,
        "trained": probe_encoder(encoder, config, cli.scenes, cli.steps, cli.layer),
    }
    if cli.random_init:
        torch.manual_seed(0)
        rand = CLIPVisionModel(encoder.config).eval()
        report["random_init"] = probe_encoder(rand, config, cli.scenes, cli.steps, cli.layer)
    if cli.heads:
        from .vision import load_heads

        heads, _ = load_heads(Path(cli.heads))
        report["retrieval"] = retrieval(encoder, heads, config, cli.retrieval_scenes)
    if cli.out:
        Path(cli.out).write_text(json.dumps(report, indent=2))
    log.info("probe: %s", json.dumps(report))
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (args,) = HfArgumentParser(ProbeCLI).parse_args_into_dataclasses()
    print(json.dumps(main(args), indent=2))  # noqa: T201 - the CLI's output
