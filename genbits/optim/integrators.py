"""Explicit Runge–Kutta steps (Euler, Heun/RK2, RK4) on a state of named tensor lists, one entry per player.

One routine serves every method through its Butcher tableau (Butcher 2016; the RK4/Heun/Euler steps of ODE-GAN,
Qin et al. 2020). The step size may differ per player: a game integrates θ̇ = λ·g, φ̇ = α·f over one unit of time h,
i.e. each player moves with its own rate (its learning rate), which is also the time convention of the
discretization-drift flows (Rosca et al. 2021, "Discretization drift in two-player games").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

State = dict[str, list[Tensor]]
Field = Callable[[State], State]
Steps = float | dict[str, float]  # one step for every entry, or one per entry (player)


@dataclass(frozen=True)
class Tableau:
    """An explicit Butcher tableau: stage i is evaluated at v + h Σ_j a[i][j] k_j, and v⁺ = v + h Σ_i b[i] k_i."""

    a: tuple[tuple[float, ...], ...]  # row i holds the i weights of the earlier stages (row 0 is empty)
    b: tuple[float, ...]
    order: int


EULER = Tableau(a=((),), b=(1.0,), order=1)
HEUN = Tableau(a=((), (1.0,)), b=(0.5, 0.5), order=2)
RK4 = Tableau(a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), order=4)
TABLEAUS = {"euler": EULER, "heun": HEUN, "rk4": RK4}


def step_of(h: Steps, name: str) -> float:
    return h[name] if isinstance(h, dict) else h


def weighted_sum(ks: Sequence[State], weights: Sequence[float]) -> State:
    """Σ_j w_j k_j, entry by entry (terms with weight 0 are skipped, so unused stages cost nothing)."""
    used = [(w, k) for w, k in zip(weights, ks, strict=True) if w != 0.0]
    first = ks[0]
    return {
        name: [sum((w * k[name][i] for w, k in used), torch.zeros_like(x)) for i, x in enumerate(first[name])]
        for name in first
    }


def axpy(v: State, h: Steps, k: State) -> State:
    """v + h·k, with h per entry or shared."""
    return {name: [x + step_of(h, name) * d for x, d in zip(xs, k[name], strict=True)] for name, xs in v.items()}


def slope(field: Field, v: State, h: Steps, tableau: Tableau, first: State | None = None) -> State:
    """Σ_i b_i k_i, the direction of one step (v⁺ = v + h·slope); ``first`` is k1 = field(v) when already known."""
    ks = [field(v) if first is None else first]
    for row in tableau.a[1:]:
        ks.append(field(axpy(v, h, weighted_sum(ks, row))))
    return weighted_sum(ks, tableau.b)


def step(field: Field, v: State, h: Steps, tableau: Tableau) -> State:
    """One explicit Runge–Kutta step of v̇ = field(v)."""
    return axpy(v, h, slope(field, v, h, tableau))
