"""The joint gradient field: every player's gradient of its own loss, evaluated where an update rule asks.

This is the one place that runs the objective under autocast, checks the losses are finite, differentiates, and
all-reduces gradients across processes. Rules that evaluate the field several times per step (RK4, extragradient)
pass ``update_state=False`` after the first evaluation so layer state (BN running statistics, power-iteration
vectors) moves once per step, as in a plain step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

from genbits.data.base import Batch
from genbits.errors import NonFiniteLoss
from genbits.objectives.base import Losses
from genbits.train.distributed import all_reduce_mean, any_process

Grads = dict[str, list[Tensor]]

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def frozen_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer on exit: forward passes inside leave no trace in layer state."""
    saved = [b.clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved, strict=True):
                b.copy_(s)


class GradientField:
    def __init__(
        self,
        model: nn.Module,
        objective,
        players: dict[str, nn.Module],
        precision: str = "fp32",
        device: torch.device | str = "cpu",
    ):
        self.model, self.objective = model, objective
        self.params = {name: [p for p in m.parameters() if p.requires_grad] for name, m in players.items()}
        self.device_type = torch.device(device).type
        self.dtype = AUTOCAST.get(precision)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.loss_scale = 2.0**16 if precision == "fp16" else 1.0
        self.evaluations = 0

    def __call__(self, batch: Batch, update_state: bool = True) -> tuple[Grads, Losses]:
        with nullcontext() if update_state else frozen_buffers(self.model):
            while True:
                grads, out = self._evaluate(batch)
                bad = [name for name, loss in out.losses.items() if not torch.isfinite(loss)]
                # every process must take the same branch, or the next collective deadlocks
                if any_process(bool(bad)):
                    raise NonFiniteLoss(
                        f"the loss of {', '.join(bad)} is not finite"
                        if bad
                        else "a loss is not finite on another process"
                    )
                overflow = self.loss_scale != 1.0 and not all(
                    torch.isfinite(g).all() for gs in grads.values() for g in gs
                )
                if not any_process(overflow):
                    break
                if self.loss_scale <= 1.0:
                    raise NonFiniteLoss("fp16 gradients are not finite even without loss scaling")
                self.loss_scale /= 2  # fp16 overflow: evaluate the same point again with a smaller scale
        all_reduce_mean([g for gs in grads.values() for g in gs])
        self.evaluations += 1
        return grads, out

    def _evaluate(self, batch: Batch) -> tuple[Grads, Losses]:
        autocast = torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        with autocast:
            out = self.objective(self.model, batch)
        names = list(out.losses)
        grads: Grads = {}
        for i, name in enumerate(names):
            params = self.params[name]
            found = torch.autograd.grad(
                out.losses[name].float() * self.loss_scale,
                params,
                retain_graph=i < len(names) - 1,
                allow_unused=True,
            )
            grads[name] = [
                torch.zeros_like(p) if g is None else g / self.loss_scale for p, g in zip(params, found, strict=True)
            ]
        return grads, out
