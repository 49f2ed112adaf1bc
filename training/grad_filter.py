"""A low-pass filter on the gradients ("Grokfast", Lee et al. 2024, arXiv:2405.20233): each step adds `lam` times an
exponential moving average of the gradients to the gradient itself, so the slow, consistent component is amplified
over the fast one. The paper reports that tasks learnt by a late, sudden transition (grokking) make it in far fewer
steps. The recipe's two focus transitions (the colour lookup by shape, position's relations) are of that kind
(docs/recipe.md, sessions 36-50). Session 51: on one start model, alpha 0.98 and lambda 2 made the colour lookup later
(not formed by 1,900 steps against 1,600 without it), so it is off everywhere; the option stays for other settings.

The filter runs after gradient clipping and before the optimizer step. Its averages live in memory only: a run resumed
from a checkpoint starts them again from the first gradient it sees."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from assistant.errors import ConfigError


class GradientFilter(TrainerCallback):
    """g <- g + lam * ema(g), the average with decay `alpha` per step (Grokfast-EMA)."""

    def __init__(self, alpha: float, lam: float) -> None:
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"grad_filter_alpha must be in (0, 1) (0 is off), got {alpha}")
        if lam <= 0:
            raise ConfigError(f"grad_filter_lambda must be > 0, got {lam}")
        self.alpha, self.lam = alpha, lam
        self.averages: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        for name, param in model.named_parameters():
            if param.grad is None:
                continue
            average = self.averages.get(name)
            if average is None:
                self.averages[name] = average = param.grad.detach().clone()
            else:
                average.mul_(self.alpha).add_(param.grad, alpha=1.0 - self.alpha)
            param.grad.add_(average, alpha=self.lam)
