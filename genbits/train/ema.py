"""Exponential moving average of the weights, which sampling and evaluation use by default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class EMA:
    """θ̄ ← d·θ̄ + (1 − d)·θ with d = min(decay, (1 + t)/(10 + t)).

    The warm-up on d keeps early averages from being dominated by the random initialisation (with a plain 0.999,
    13% of a 2,000-step average would still be the init). Buffers are not averaged: the live ones are used.
    With decay 0 the average is the live weights: the shadow shares their storage, so no step copies a tensor.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach() if decay == 0 else p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        if self.decay == 0:
            return  # the shadow is the live weights
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the average at the current weights (after a data-dependent init, say)."""
        for name, p in model.named_parameters():
            self.shadow[name].copy_(p)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the averaged weights into ``model``."""
        live = {name: p.detach().clone() for name, p in model.named_parameters()}
        self._copy(model, self.shadow)
        try:
            yield model
        finally:
            self._copy(model, live)

    @staticmethod
    @torch.no_grad()
    def _copy(model: nn.Module, values: dict[str, Tensor]) -> None:
        for name, p in model.named_parameters():
            p.copy_(values[name])

    def state_dict(self) -> dict[str, object]:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.updates = int(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
