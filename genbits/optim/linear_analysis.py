"""Linear stability of update rules: the Jacobian of one step at a point (a fixed point of the game, say) and its
spectral radius ρ. Near a fixed point the rule multiplies the distance by about ρ per step: ρ > 1 spirals out, ρ = 1
circles, ρ < 1 converges.

The step is the rule's own ``play`` run on a ``FunctionalGame``: parameters are plain tensors that are functions
of the input, the objective runs through ``torch.func.functional_call``, gradients keep their graph, and every
update is a plain step of size lr — the SGD case of every rule. ``torch.autograd.functional.jacobian`` then
differentiates the whole step. A rule's memory (optimistic's previous gradients) is part of the state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from genbits.data.base import Batch
from genbits.optim.field import Grads, Penalty, differentiate
from genbits.optim.games import GameRule
from genbits.optim.integrators import State


class _Objective(nn.Module):
    """The objective as a module's forward, so ``functional_call`` can swap the model's parameters under it."""

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: Batch):
        return self.objective(self.model, batch)


def parameter_names(model: nn.Module, players: dict[str, nn.Module]) -> dict[str, list[str]]:
    """Each player's trainable parameters by their names in ``model`` (the order the GradientField uses)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {
        player: [names[id(p)] for p in module.parameters() if p.requires_grad] for player, module in players.items()
    }


class FunctionalGame:
    """The Game protocol on tensors: every result is a differentiable function of the starting point."""

    def __init__(self, model: nn.Module, objective, batch: Batch, point: State, lr: dict[str, float]):
        self.module = _Objective(model, objective)
        self.names = parameter_names(model, model.players())
        self.players = tuple(point)
        self.batch, self.v, self.lrs = batch, dict(point), lr

    def point(self) -> State:
        return dict(self.v)

    def move(self, v: State) -> None:
        self.v = self.v | v

    def update(self, player: str, grads: list[Tensor]) -> None:
        self.v = self.v | {player: [x - self.lrs[player] * g for x, g in zip(self.v[player], grads, strict=True)]}

    def lr(self, player: str) -> float:
        return self.lrs[player]

    def grads(self, players: Sequence[str], penalty: Penalty | None = None, stage: bool = False) -> tuple[Grads, Grads]:
        # fresh nodes: gradients w.r.t. them are partial derivatives at this point, even where one player's point
        # already depends on another's (alternating turns), while staying differentiable w.r.t. the start
        here = {p: [x.clone() for x in xs] for p, xs in self.v.items()}
        params = {f"model.{n}": x for p, xs in here.items() for n, x in zip(self.names[p], xs, strict=True)}
        out = functional_call(self.module, params, (self.batch,))
        grads, penalty_grads, _ = differentiate(out.per_player, here, players, penalty, create_graph=True)
        return grads, penalty_grads


def _flatten(states: Sequence[State]) -> Tensor:
    return torch.cat([x.reshape(-1) for state in states for xs in state.values() for x in xs])


def _split(flat: Tensor, like: Sequence[State]) -> list[State]:
    """The inverse of ``_flatten``: views of ``flat`` shaped like ``like``."""
    pieces = iter(flat.split([x.numel() for state in like for xs in state.values() for x in xs]))
    return [{p: [next(pieces).view_as(x) for x in xs] for p, xs in state.items()} for state in like]


def step_jacobian(rule: GameRule, model: nn.Module, objective, batch: Batch) -> Tensor:
    """∂(one step of ``rule``)/∂(state) at the model's current parameters, with each player's current lr.

    The state is the parameters, player by player, followed by each memory entry the rule reads (linearized at
    zero, the field's value at a fixed point; the step is linear in it)."""
    point = {p: [x.detach() for x in xs] for p, xs in rule.field.params.items()}
    lr = {p: opt.param_groups[0]["lr"] for p, opt in rule.optimizers.items()}
    layout = [point] + [{p: [torch.zeros_like(x) for x in xs] for p, xs in point.items()} for _ in rule.memory_keys]

    def one_step(flat: Tensor) -> Tensor:
        start, *memory = _split(flat, layout)
        rule.memory = dict(zip(rule.memory_keys, memory, strict=True))
        game = FunctionalGame(model, objective, batch, start, lr)
        rule.play(game)
        return _flatten([game.v, *(rule.memory[k] for k in rule.memory_keys)])

    saved = rule.memory
    try:
        return torch.autograd.functional.jacobian(one_step, _flatten(layout))
    finally:
        rule.memory = saved


def spectral_radius(matrix: Tensor) -> float:
    """max |eigenvalue|: the factor by which the linearized map eventually scales distances per step."""
    return float(torch.linalg.eigvals(matrix).abs().max())
