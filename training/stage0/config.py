"""Stage-0 arguments: one dataclass per part, field names unique so one parser reads them all."""

from __future__ import annotations

from dataclasses import dataclass, field

from .captions import HARD_KINDS

LOSSES = ("infonce", "siglip")
# Seeds stage 0 may use: training scenes below HOLDOUT_BASE, held-out (probe, perplexity) scenes from it.
# Both stay below assistant.toyworld.EVAL_SEED_BASE, which belongs to evaluation sets.
HOLDOUT_BASE = 900_000_000


@dataclass
class VisionArgs:
    vision_hidden: int = field(default=128, metadata={"help": "Hidden size of the CLIP vision encoder."})
    vision_layers: int = field(default=4, metadata={"help": "Transformer layers of the encoder."})
    vision_heads: int = field(default=4, metadata={"help": "Attention heads of the encoder."})
    vision_patch: int = field(
        default=16, metadata={"help": "Patch size in px (the tile must be a multiple)."}
    )
    vision_tile: int = field(
        default=64, metadata={"help": "Tile (and base view) size in px: CLIP image_size."}
    )
    vision_steps: int = field(default=400, metadata={"help": "Optimiser steps for the encoder."})
    vision_batch: int = field(default=32, metadata={"help": "Scenes per step (each gives 1 + tiles views)."})
    vision_lr: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate (cosine, warmup)."})
    vision_feature_layer: int = field(
        default=-2,
        metadata={
            "help": "Hidden layer that gets the dense loss: the layer LLaVA will read (-2 by default)."
        },
    )
    dense_weight: float = field(default=1.0, metadata={"help": "Weight of the per-patch ground-truth loss."})
    luminance_init: float = field(
        default=0.0,
        metadata={"help": "Fraction of patch filters initialised colour-blind (0 = plain random)."},
    )
    silhouette_cells: int = field(
        default=4, metadata={"help": "Per-patch silhouette target: cells x cells object-coverage values."}
    )
    object_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the per-object loss (shape, colour from its pooled patches)."},
    )
    shape_weight: float = field(
        default=1.0,
        metadata={
            "help": "Extra weight of the shape terms (per-patch and per-object) inside the dense loss: above 1 "
            "makes shape as loud in the patch tokens as colour (issue 14, arm E)."
        },
    )
    position_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a per-patch loss that names the patch's own place in its view (one of the view's "
            "P patches), inside the dense loss: keeps where a patch is in the tokens LLaVA reads (0: off; session "
            "15: without it the connector's output tells a patch's place at 0.13, chance 0.06, and position "
            "answers stayed at chance)."
        },
    )
    size_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a per-patch size term (each patch an object covers regresses log2 of the object's side "
            "in the view's patches), inside the dense loss (0: off; session 24: a probe reads size classes from the "
            "encoder's tokens at 0.635 without it, 0.693 at 4, and colour questions that name an object by its "
            "size were the model's last colour errors)."
        },
    )
    contrastive_weight: float = field(default=0.5, metadata={"help": "Weight of the contrastive loss."})
    contrastive_loss: str = field(default="infonce", metadata={"help": f"Contrastive loss: {LOSSES}."})
    hard_negatives: int = field(
        default=2, metadata={"help": f"Hard-negative captions per scene, each one of {HARD_KINDS} changed."}
    )
    embed_dim: int = field(default=128, metadata={"help": "Joint image-text embedding size."})

    def __post_init__(self) -> None:
        if self.contrastive_loss not in LOSSES:
            raise ValueError(f"unknown contrastive_loss {self.contrastive_loss!r}; choose from {LOSSES}")
        if self.vision_tile % self.vision_patch:
            raise ValueError(
                f"vision_tile {self.vision_tile} must be a multiple of vision_patch {self.vision_patch}"
            )
        if self.vision_hidden % self.vision_heads:
            raise ValueError(
                f"vision_hidden {self.vision_hidden} must divide by vision_heads {self.vision_heads}"
            )
        if not -self.vision_layers <= self.vision_feature_layer < 0:
            raise ValueError(
                f"vision_feature_layer must be in [-{self.vision_layers}, -1], got {self.vision_feature_layer}"
            )
        if self.vision_steps < 1 or self.vision_batch < 2:
            raise ValueError("vision_steps must be >= 1 and vision_batch >= 2 (contrastive needs a batch)")
        if self.size_weight < 0:
            raise ValueError(f"size_weight must be >= 0, got {self.size_weight}")
        if self.hard_negatives < 0:
            raise ValueError(f"hard_negatives must be >= 0, got {self.hard_negatives}")


@dataclass
class LanguageArgs:
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size (special tokens included)."})
    corpus_scenes: int = field(default=3000, metadata={"help": "Scenes whose text trains tokenizer and LM."})
    lm_hidden: int = field(default=192, metadata={"help": "Hidden size of the Llama LM."})
    lm_layers: int = field(default=4, metadata={"help": "Decoder layers of the LM."})
    lm_heads: int = field(default=4, metadata={"help": "Attention heads of the LM."})
    lm_max_positions: int = field(default=1024, metadata={"help": "max_position_embeddings of the LM."})
    lm_block: int = field(default=256, metadata={"help": "Tokens per packed training sequence."})
    lm_batch: int = field(default=8, metadata={"help": "Sequences per LM step."})
    lm_steps: int = field(default=300, metadata={"help": "Optimiser steps for the LM."})
    lm_lr: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate (cosine, warmup)."})
    lm_eval_every: int = field(default=100, metadata={"help": "Held-out perplexity every N steps."})

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise ValueError(
                f"vocab_size must be >= 300 (256 bytes + specials + merges), got {self.vocab_size}"
            )
        if self.lm_hidden % self.lm_heads:
            raise ValueError(f"lm_hidden {self.lm_hidden} must divide by lm_heads {self.lm_heads}")
        if self.lm_block > self.lm_max_positions:
            raise ValueError(f"lm_block {self.lm_block} exceeds lm_max_positions {self.lm_max_positions}")
        if min(self.lm_steps, self.lm_batch, self.lm_eval_every, self.corpus_scenes) < 1:
            raise ValueError("lm_steps, lm_batch, lm_eval_every and corpus_scenes must be >= 1")


@dataclass
class ProbeArgs:
    probe_scenes: int = field(
        default=1000, metadata={"help": "Held-out scenes for the probe (80%% fit, 20%% test)."}
    )
    probe_steps: int = field(default=300, metadata={"help": "Optimiser steps per probe."})
    retrieval_scenes: int = field(default=200, metadata={"help": "Held-out scenes for caption retrieval."})

    def __post_init__(self) -> None:
        if self.probe_scenes < 10 or self.retrieval_scenes < 2 or self.probe_steps < 1:
            raise ValueError("probe_scenes must be >= 10, retrieval_scenes >= 2 and probe_steps >= 1")
