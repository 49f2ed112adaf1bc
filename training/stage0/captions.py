"""Canonical captions of a view's objects, hard negatives that differ in one attribute, and a tiny
transformer text tower that encodes them for the contrastive loss (a training-only head).

The caption of a (colour, shape) multiset is canonical, so equal multisets give equal strings:
`"two red circles and a blue star"`; an empty view is `"no objects"`.
"""

from __future__ import annotations

import random
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from assistant.toyworld import COLORS, SHAPES
from assistant.toyworld.describe import join_words
from assistant.toyworld.vocab import NUMBER_WORDS, count_phrase, plural

Pairs = Counter[tuple[str, str]]
HARD_KINDS = ("color", "shape", "count")


def caption_of(pairs: Pairs) -> str:
    """Canonical caption: most frequent group first, then by colour and shape."""
    if not pairs:
        return "no objects"
    ordered = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    return join_words([count_phrase(n, c, s) for (c, s), n in ordered])


def hard_negative(pairs: Pairs, rng: random.Random, kind: str | None = None) -> Pairs:
    """`pairs` with one attribute changed: one object's colour, one object's shape, or the count (+-1)."""
    kind = kind or rng.choice(HARD_KINDS)
    if kind not in HARD_KINDS:
        raise ValueError(f"unknown hard-negative kind {kind!r}; choose from {HARD_KINDS}")
    out = Counter(pairs)
    if not pairs or kind == "count":
        if pairs and rng.random() < 0.5:
            victim = rng.choice(sorted(pairs))
            out[victim] -= 1  # one fewer
            return +out
        if pairs and rng.random() < 0.5:
            out[rng.choice(sorted(pairs))] += 1  # one more of a kind already there
            return out
        out[(rng.choice(list(COLORS)), rng.choice(SHAPES))] += 1
        return out
    color, shape = rng.choice(sorted(pairs))
    out[(color, shape)] -= 1
    if kind == "color":
        out[(rng.choice([c for c in COLORS if c != color]), shape)] += 1
    else:
        out[(color, rng.choice([s for s in SHAPES if s != shape]))] += 1
    return +out


def caption_vocab() -> dict[str, int]:
    """Every word a caption can hold (index 0 is padding)."""
    words = [
        "<pad>",
        "a",
        "an",
        "and",
        "objects",
        *NUMBER_WORDS,
        *COLORS,
        *SHAPES,
        *(plural(s) for s in SHAPES),
    ]
    return {w: i for i, w in enumerate(dict.fromkeys(words))}


class CaptionEncoder(nn.Module):
    """Words -> embedding: a 2-layer transformer (word order binds colours to shapes), mean-pooled."""

    def __init__(self, dim: int, out_dim: int, layers: int = 2, max_words: int = 48) -> None:
        super().__init__()
        self.vocab = caption_vocab()
        self.max_words = max_words
        self.embed = nn.Embedding(len(self.vocab), dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(max_words, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim)
        nn.init.normal_(self.pos, std=0.02)

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """(N, L) word ids, padded with 0 to the longest caption."""
        rows = [
            [self.vocab[w] for w in text.replace(",", " ").split()][: self.max_words] for text in captions
        ]
        ids = torch.zeros(len(captions), max(1, *(len(r) for r in rows)), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids

    def forward(self, captions: list[str]) -> torch.Tensor:
        """Captions -> (N, E); each distinct caption is encoded once."""
        unique = list(dict.fromkeys(captions))
        where = {c: i for i, c in enumerate(unique)}
        ids = self.tokenize(unique).to(self.pos.device)  # (U, L)
        pad = ids.eq(0)
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (U, L, D)
        x = self.norm(self.encoder(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).float()
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (U, D)
        # a one-hot matmul rather than indexing: indexing's backward sums repeated rows in a varying order
        # on 2+ threads, and stage 0 must give the same weights every run
        pick = F.one_hot(torch.tensor([where[c] for c in captions]), len(unique)).float()  # (N, U)
        return pick.to(pooled.device) @ self.proj(pooled)  # (N, E)
