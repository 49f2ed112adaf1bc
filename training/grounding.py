"""Grounded image tokens, a toy-recipe lever: an auxiliary loss that makes each image token point, in the LM's own
word-embedding space, at the words for what its patch shows.

The embedded model finds an object by its colour word and never by its shape word (docs/recipe.md): the LM has to
learn, from question answering alone, a query for "star" that matches the patches of a star. Stage 0's dense head
reads each patch's shape and colour from the features the connector reads (0.90 / 0.99 on tiles). This loss asks
the connector's output for a patch to have, among the LM's embeddings of the shape words, the highest cosine with
the word for the shape that head sees (and likewise for colour), weighted by the head's objectness. The word
embeddings are not moved by it. The LM then sees " star" in the question and star-like vectors among the image
tokens in the same space, which attention can match directly.

Tried as arm T (docs/recipe.md, session 9): the loss is learnt and the LM reads a lone object's shape better, but
finding an object by its shape did not improve (colour questions 0.49 -> 0.44), so the recipe leaves it off.

Needs a tower with stage 0's heads (`vision_heads.pt`, written by training/bootstrap.py); hub towers have none.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from assistant.errors import ConfigError

log = logging.getLogger(__name__)


def _find_projector(model: nn.Module) -> nn.Module:
    for name, module in model.named_modules():
        if name.endswith("multi_modal_projector"):
            return module
    raise ConfigError(
        "token grounding needs an MLP connector (`multi_modal_projector`); this model has none (Q-Former?)"
    )


class TokenGrounding:
    """Hooks the connector; `loss()` returns the grounding loss of the last forward (or None if it saw no image)."""

    def __init__(
        self, model: nn.Module, tokenizer, heads_path: str | Path, weight: float, temperature: float = 0.1
    ) -> None:
        from assistant.toyworld import COLORS, SHAPES
        from training.stage0.vision import load_heads

        if not Path(heads_path).is_file():
            raise ConfigError(
                f"no stage-0 heads at {heads_path}; give the vision_heads.pt training/bootstrap.py wrote"
            )
        heads, _ = load_heads(Path(heads_path))
        for p in heads.parameters():
            p.requires_grad_(False)
        self.norm, self.dense = heads.dense_norm, heads.dense
        self.n_shapes = len(SHAPES)
        self.word_ids = [tokenizer.encode(" " + w, add_special_tokens=False) for w in (*SHAPES, *COLORS)]
        self.embeddings = model.get_input_embeddings()
        self.weight, self.temperature = weight, temperature
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        _find_projector(model).register_forward_hook(self._hook)
        log.info("token grounding on: weight %.2f, heads %s", weight, heads_path)

    def word_vectors(self) -> torch.Tensor:
        """(S + C, D) unit vectors: each word's input embedding (the mean of its pieces if the tokenizer splits it;
        the toy tokenizer keeps every shape and colour whole)."""
        table = self.embeddings.weight.detach().float()
        return F.normalize(torch.stack([table[ids].mean(0) for ids in self.word_ids]), dim=-1)

    def _hook(self, module, inputs, output) -> None:
        # the first forward of a step: TRL's label-smoothing path runs a no-grad second one
        if self._last is None:
            self._last = (inputs[0], output)

    def reset(self) -> None:
        self._last = None

    def loss(self) -> torch.Tensor | None:
        if self._last is None:
            return None
        feats, tokens = self._last
        self._last = None
        s = self.n_shapes
        with torch.no_grad():
            out = self.dense(self.norm(feats.float()))
            objectness = torch.sigmoid(out[..., 0])
            target_shape = out[..., 2 : 2 + s].softmax(-1)
            target_colour = out[..., 2 + s :].softmax(-1)
        logits = F.normalize(tokens.float(), dim=-1) @ self.word_vectors().T / self.temperature
        shape_loss = -(target_shape * logits[..., :s].log_softmax(-1)).sum(-1)
        colour_loss = -(target_colour * logits[..., s:].log_softmax(-1)).sum(-1)
        per_patch = (shape_loss + colour_loss) * objectness
        return self.weight * per_patch.sum() / objectness.sum().clamp(min=1.0)


class GroundingMixin:
    """Adds `TokenGrounding`'s loss to the trainer's loss when `self.grounding` is set; logs it as `grounding`."""

    grounding: TokenGrounding | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.grounding is not None:
            self.grounding.reset()
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        extra = self.grounding.loss() if self.grounding is not None else None
        if extra is None:
            return result
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["grounding"].append(extra.item())
        # as TRL scales its MoE aux loss: the main loss is already per step
        if num_items_in_batch is not None:
            extra = extra / self.current_gradient_accumulation_steps
        if return_outputs:
            loss, outputs = result
            return loss + extra, outputs
        return result + extra
