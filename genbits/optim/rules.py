"""Update rules: they own the players' optimizers and decide where and how often the gradient field is evaluated.

A rule sees a ``Batches`` supplier: ``first`` is the step's batch, ``fresh()`` draws another one for rules whose
stages want new data. Single-player training is the simplest rule, ``gd``: one evaluation, one optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from genbits.config import OptimConfig, PlayerOptim
from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.metrics.dynamics import Dynamics
from genbits.objectives.base import Losses
from genbits.optim.field import GradientField, Grads
from genbits.registry import RULES


class Batches:
    """The data a rule may use in one step: the step's own batch, and fresh ones on demand."""

    def __init__(self, first: Batch, draw: Callable[[], Batch]):
        self.first, self._draw = first, draw

    def fresh(self) -> Batch:
        return self._draw()


def decay_groups(module: nn.Module, params: list[nn.Parameter], which: str) -> list[dict[str, Any]]:
    """Parameter groups for weight decay: ``all`` decays every parameter; ``matrices`` only weight matrices and
    kernels (≥ 2-D), not norms, biases, scalars (σReparam's γ) or embedding tables (a tied output layer is an
    embedding table), as transformer recipes do (Loshchilov & Hutter 2019; GPT-2, nanoGPT)."""
    if which == "all":
        return [{"params": params}]
    tables = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decayed = [p for p in params if p.ndim >= 2 and id(p) not in tables]
    kept = [p for p in params if not (p.ndim >= 2 and id(p) not in tables)]
    return [{"params": decayed}, {"params": kept, "weight_decay": 0.0}]


def fusable(params: list[nn.Parameter] | list[dict[str, Any]]) -> bool:
    """Whether torch's fused Adam/AdamW kernel takes these parameters: floating point, all on CPU or all on CUDA."""
    tensors = [p for group in params for p in group["params"]] if params and isinstance(params[0], dict) else params
    devices = {p.device.type for p in tensors}
    return len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in tensors)


def make_optimizer(params: list[nn.Parameter] | list[dict[str, Any]], s: PlayerOptim) -> torch.optim.Optimizer:
    """A torch optimizer from resolved per-player settings (``params``: tensors or parameter groups). ``fused``:
    Adam/AdamW as one kernel over all parameters (torch's ``fused=True``), the same update up to float rounding."""
    if s.fused and (s.optimizer not in ("adam", "adamw") or not fusable(params)):
        raise ConfigError(
            f"optim.fused: torch fuses adam and adamw only, over floating-point parameters all on CPU or all on CUDA "
            f"(optimizer {s.optimizer!r}); set optim.fused=false"
        )
    if s.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if s.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=s.lr, betas=tuple(s.betas), eps=s.eps, weight_decay=s.weight_decay, fused=s.fused or None)
    if s.optimizer == "adamax":
        return torch.optim.Adamax(params, lr=s.lr, betas=tuple(s.betas), eps=s.eps, weight_decay=s.weight_decay)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.RMSprop(params, lr=s.lr, momentum=s.momentum, eps=s.eps, weight_decay=s.weight_decay)


def lr_factor(optim: OptimConfig, step: int, total: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or cosine decay to ``final_lr_ratio`` at ``total``."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total - optim.warmup_steps))
    r = optim.final_lr_ratio
    return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress))


class UpdateRule:
    """Base class: per-player optimizers, learning-rate scaling, gradient clipping and checkpointable state."""

    def __init__(self, players: dict[str, nn.Module], optim: OptimConfig, field: GradientField):
        self.field = field
        self.settings = {name: optim.for_player(name) for name in players}
        self.optimizers = {
            name: make_optimizer(decay_groups(module, field.params[name], optim.decay), self.settings[name])
            for name, module in players.items()
        }
        self.lr_scale = 1.0  # lowered by NaN rollbacks; checkpointed
        self.dynamics: Dynamics | None = None  # set by the loop when train.diagnostics is on

    def step(self, batches: Batches) -> Losses:
        raise NotImplementedError

    def set_lr_factor(self, factor: float) -> None:
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.settings[name].lr * factor * self.lr_scale

    def apply(self, name: str, grads: list[Tensor]) -> None:
        """One optimizer step of player ``name`` along ``grads`` (clipped to the player's grad_clip)."""
        params = self.field.params[name]
        before = self.dynamics.observe_gradients(name, grads) if self.dynamics else None
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        if self.settings[name].grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.settings[name].grad_clip)
        self.optimizers[name].step()
        for p in params:
            p.grad = None
        if self.dynamics:
            self.dynamics.observe_update(name, before)

    def state_dict(self) -> dict[str, Any]:
        return {
            "lr_scale": self.lr_scale,
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr_scale = float(state["lr_scale"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])


@RULES.register("gd")
class GradientStep(UpdateRule):
    """One field evaluation, then every player steps with its own optimizer (simultaneous when there are several)."""

    def step(self, batches: Batches) -> Losses:
        grads: Grads
        grads, out = self.field(batches.first)
        for name, g in grads.items():
            self.apply(name, g)
        return out
