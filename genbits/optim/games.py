"""Game update rules: how the players of a game move through their joint gradient field: simultaneous and
alternating gradient descent, Runge–Kutta integration of the game's ODE (Qin et al. 2020), the Dirac-GAN analysis
(Mescheder et al. 2018) and the discretization-drift corrections of Rosca et al. (2021).

Each rule is written once, as ``play(game)`` against the small ``Game`` protocol: take gradients at the current
point, jump to a point, update one player. On the model (``FieldGame``, used in training) every evaluation goes
through the GradientField — so it is all-reduced across processes, NaN-checked and counted — and every update
through that player's own optimizer. On plain tensors (``genbits.optim.linear_analysis``) the same ``play`` is a
differentiable function whose Jacobian is the rule's linearized update map. Gradients point uphill (∇L); the vector
field of the game's ODE is F = −∇L.

Field evaluations per step (s = stages of the method: 1 Euler, 2 Heun, 4 RK4):

- ``alternating``: n_critic + 1, each for one player;
- ``ode``: joint s; frozen-other 1 + 2(s − 1) (each stage once per player); the first with double backward when
  ``regularizer`` > 0;
- ``extragradient``: 2; ``optimistic``: 1 (the previous gradients are state, checkpointed); ``consensus``: 1 with
  double backward;
- ``drift``: simultaneous 1, alternating 2 (one player each), with double backward unless ``correction=none``.

``n_critic`` belongs to ``alternating`` only: in a simultaneous step both players move from one point, so "several
critic steps per generator step" is already an alternating schedule (``gd`` stays one evaluation, one step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from genbits.config import OptimConfig, PlayerOptim
from genbits.objectives.base import Losses
from genbits.optim.field import FieldValue, GradientField, GradOf, Grads, Penalty, Term
from genbits.optim.integrators import TABLEAUS, State, slope
from genbits.optim.rules import Batches, UpdateRule
from genbits.registry import RULES

Role = Literal["discriminator", "generator"]
Stages = Literal["same", "fresh"]
Method = Literal["euler", "heun", "rk4"]
Integration = Literal["joint", "frozen-other"]
DriftUpdates = Literal["simultaneous", "alternating", "alternating-generator-first"]
DriftCorrection = Literal["cancel-interaction", "cancel-all", "none"]
DriftForm = Literal["derived", "code"]

DRIFT_PRESETS: dict[str, tuple[float, float]] = {
    "cancel-interaction": (0.0, -1.0),  # (self, interaction) multipliers, the same for both players
    "cancel-all": (-1.0, -1.0),
    "none": (0.0, 0.0),
}


# ------------------------------------------------------------------------------------------- the Game protocol


class Game(Protocol):
    """Where a rule's ``play`` acts: the model in training, or differentiable tensors in the linear analysis."""

    players: tuple[str, ...]

    def point(self) -> State:
        """The current parameters (a snapshot)."""

    def move(self, v: State) -> None:
        """Jump to ``v`` (players missing from ``v`` stay where they are), no optimizer involved."""

    def grads(self, players: Sequence[str], penalty: Penalty | None = None, stage: bool = False) -> tuple[Grads, Grads]:
        """∇_p L_p for ``players`` at the current point, and ∇_p P_p of the penalty. ``stage``: an intermediate
        evaluation of one step (no player steps from this point)."""

    def update(self, player: str, grads: list[Tensor]) -> None:
        """One step of ``player`` along ``grads`` (its optimizer; a plain step of size lr in the analysis)."""

    def lr(self, player: str) -> float:
        """The player's current step size h (learning rate with schedule)."""


class RandomState:
    """The torch random state at one moment (CPU and the model's CUDA device), to replay its draws later."""

    def __init__(self, devices: list[int]):
        self.devices = devices
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in devices]

    @contextmanager
    def replayed(self) -> Iterator[None]:
        """Draws inside repeat those made after the capture; outside, the streams continue as if untouched."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda, strict=True):
                torch.cuda.set_rng_state(state, device)
            yield


class FieldGame:
    """The game on the model for one training step, evaluated through the GradientField.

    Data: the step's first evaluation uses the step's batch and moves layer state. A later evaluation at a point a
    player then steps from (alternating turns) draws a fresh batch and moves layer state, as the next iteration of a
    plain loop would. Stage evaluations (Runge–Kutta stages, extragradient's look-ahead) leave layer state alone and
    see either the first evaluation's batch *and* random draws, latents included (``same``: one deterministic field
    per step, as in the ODE-GAN notebook), or a fresh batch (``fresh``, as in the discretisation_drift code).
    """

    def __init__(self, rule: UpdateRule, batches: Batches, stages: Stages):
        self.rule, self.batches, self.stages = rule, batches, stages
        self.field: GradientField = rule.field
        self.players = tuple(rule.optimizers)
        self.losses: Losses | None = None  # of the first evaluation: what the step logs
        self.start: RandomState | None = None

    def point(self) -> State:
        return {p: [x.detach().clone() for x in xs] for p, xs in self.field.params.items()}

    @torch.no_grad()
    def move(self, v: State) -> None:
        for p, xs in v.items():
            for param, x in zip(self.field.params[p], xs, strict=True):
                param.copy_(x)

    def update(self, player: str, grads: list[Tensor]) -> None:
        self.rule.apply(player, grads)

    def lr(self, player: str) -> float:
        return self.rule.optimizers[player].param_groups[0]["lr"]

    def grads(self, players: Sequence[str], penalty: Penalty | None = None, stage: bool = False) -> tuple[Grads, Grads]:
        value = self._evaluate(players, penalty, stage)
        self.losses = self.losses or value.losses
        return value.grads, value.penalty_grads

    def _evaluate(self, players: Sequence[str], penalty: Penalty | None, stage: bool) -> FieldValue:
        if self.losses is None:
            if self.stages == "same":
                self.start = RandomState(self._cuda_devices())
            return self.field.evaluate(self.batches.first, True, players, penalty)
        if stage and self.stages == "same":
            with self.start.replayed():
                return self.field.evaluate(self.batches.first, False, players, penalty)
        return self.field.evaluate(self.batches.fresh(), not stage, players, penalty)

    def _cuda_devices(self) -> list[int]:
        return sorted({x.device.index for xs in self.field.params.values() for x in xs if x.device.type == "cuda"})


# ------------------------------------------------------------------------------------------ shared pieces


def plus(grads: list[Tensor], extra: list[Tensor] | None) -> list[Tensor]:
    return grads if extra is None else [g + e for g, e in zip(grads, extra, strict=True)]


def negated(state: State) -> State:
    return {p: [-x for x in xs] for p, xs in state.items()}


def other(player: str) -> str:
    return "generator" if player == "discriminator" else "discriminator"


def require_roles(players: dict[str, nn.Module], rule: str) -> None:
    if set(players) != {"generator", "discriminator"}:
        raise ValueError(
            f"{rule} needs the two players 'generator' and 'discriminator'; this model has {', '.join(players)}"
        )


def require_at_least(name: str, value: float, low: float) -> None:
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{name} must be a finite number >= {low:g}, got {value}")


def require_plain_steps(settings: dict[str, PlayerOptim], rule: str) -> None:
    """An integrator takes plain steps of size lr: an optimizer setting that would change them is refused, not
    silently ignored."""
    for name, s in settings.items():
        bad = {
            "optimizer": s.optimizer != "sgd",
            "momentum": s.momentum,
            "weight_decay": s.weight_decay,
            "grad_clip": s.grad_clip,
        }
        wrong = [f"{key}={getattr(s, key)}" for key, is_bad in bad.items() if is_bad]
        if wrong:
            raise ValueError(
                f"{rule} integrates with plain steps of size lr: player {name!r} needs optim.optimizer=sgd with "
                f"momentum, weight_decay and grad_clip 0, not {', '.join(wrong)} (optim.players.{name} may override)"
            )


def simultaneous(game: Game, penalty: Penalty | None = None) -> None:
    """Every player steps from the same point along its gradient (plus its penalty's)."""
    grads, extra = game.grads(game.players, penalty)
    for p in game.players:
        game.update(p, plus(grads[p], extra.get(p)))


def take_turns(game: Game, order: Sequence[str], penalty_of: Callable[[str], Penalty | None] | None = None) -> None:
    """Players step one after another, each from the point its predecessors left."""
    for p in order:
        grads, extra = game.grads((p,), penalty_of(p) if penalty_of else None)
        game.update(p, plus(grads[p], extra.get(p)))


def turns(first: Role, n_critic: int) -> tuple[str, ...]:
    critic = ("discriminator",) * n_critic
    return (*critic, "generator") if first == "discriminator" else ("generator", *critic)


class GameRule(UpdateRule):
    """A rule whose step is ``play(game)``, so training and the linear analysis run the same code.

    ``memory`` holds what a rule carries from step to step (optimistic's previous gradients); it is checkpointed
    with the optimizers. ``memory_keys`` names what ``play`` reads from it.
    """

    stages: Stages = "same"
    memory_keys: tuple[str, ...] = ()

    def __init__(self, players: dict[str, nn.Module], optim: OptimConfig, field: GradientField):
        super().__init__(players, optim, field)
        self.memory: dict[str, Grads] = {}

    def step(self, batches: Batches) -> Losses:
        game = FieldGame(self, batches, self.stages)
        self.play(game)
        return game.losses

    def play(self, game: Game) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"memory": self.memory}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory = {
            key: {p: [t.to(x) for t, x in zip(ts, self.field.params[p], strict=True)] for p, ts in grads.items()}
            for key, grads in state["memory"].items()
        }


# ------------------------------------------------------------------------------------------ alternating


@RULES.register("alternating")
class Alternating(GameRule):
    """Alternating gradient steps: ``n_critic`` discriminator steps (each after the first on a fresh batch) per
    generator step, the discriminator first by default; any per-player optimizer. Each turn starts from the point
    the previous turn left."""

    def __init__(
        self,
        players: dict[str, nn.Module],
        optim: OptimConfig,
        field: GradientField,
        first: Role = "discriminator",
        n_critic: int = 1,
    ):
        require_roles(players, "alternating")
        require_at_least("n_critic", n_critic, 1)
        super().__init__(players, optim, field)
        self.order = turns(first, n_critic)

    def play(self, game: Game) -> None:
        take_turns(game, self.order)


# ------------------------------------------------------------------------------------------ ODE-GAN


def gradient_norm_penalty(weight: float) -> Penalty:
    """ODE-GAN's regularizer γ‖∇_θ L_G‖², differentiated w.r.t. the discriminator only."""

    def penalty(grad_of: GradOf) -> dict[str, list[Term]]:
        g = grad_of("generator", "generator")
        return {"discriminator": [Term(2 * weight, g, g)]}

    return penalty


@RULES.register("ode")
class OdeStep(GameRule):
    """ODE-GAN (Qin et al. 2020): one explicit Runge–Kutta step (Euler, Heun or RK4) of the joint flow v̇ = F(v)
    with step h = each player's lr (plain steps: optim.optimizer must be sgd), then the regularizer
    −h·γ∇_φ‖∇_θ L_G‖², γ = ``regularizer`` (0.07 in the MoG notebook), evaluated at the step's start, as one extra
    Euler step on φ. ``stages``: the stages reuse the step's batch and latents (same) or draw fresh ones;
    ``integration``: both players together (joint) or each with the other frozen at the step's start
    (frozen-other, the notebook's scheme)."""

    def __init__(
        self,
        players: dict[str, nn.Module],
        optim: OptimConfig,
        field: GradientField,
        method: Method = "rk4",
        regularizer: float = 0.0,
        stages: Stages = "same",
        integration: Integration = "joint",
    ):
        require_plain_steps({name: optim.for_player(name) for name in players}, "ode")
        require_at_least("regularizer", regularizer, 0.0)
        if regularizer > 0:
            require_roles(players, "ode with a regularizer")
        super().__init__(players, optim, field)
        self.tableau, self.joint, self.stages = TABLEAUS[method], integration == "joint", stages
        self.penalty = gradient_norm_penalty(regularizer) if regularizer > 0 else None

    def play(self, game: Game) -> None:
        h = {p: game.lr(p) for p in game.players}
        start = game.point()
        grads, extra = game.grads(game.players, self.penalty)
        k1 = negated(grads)
        groups = [game.players] if self.joint else [(p,) for p in game.players]
        direction: State = {}
        for group in groups:
            v = {p: start[p] for p in group}
            direction |= slope(self._field(game, start, group), v, h, self.tableau, {p: k1[p] for p in group})
        game.move(start)
        for p, downhill in negated(direction).items():
            game.update(p, plus(downhill, extra.get(p)))

    @staticmethod
    def _field(game: Game, start: State, group: Sequence[str]) -> Callable[[State], State]:
        """F restricted to ``group``, the other players held at the step's start (frozen-other integration)."""

        def field(v: State) -> State:
            game.move(start | v)
            grads, _ = game.grads(group, stage=True)
            return negated(grads)

        return field


# ------------------------------------------------------------------------------------------ extragradient, optimistic


@RULES.register("extragradient")
class Extragradient(GameRule):
    """Look ahead one step, then step from the start along the gradients found there (Korpelevich; Gidel et al.).
    ``stages``: the look-ahead gradient on the step's batch and latents (same) or fresh ones.

    Both half-steps go through each player's optimizer: plain SGD gives v⁺ = v + hF(v + hF(v)), Adam gives
    Gidel et al.'s Extra-Adam (moments updated at both)."""

    def __init__(
        self, players: dict[str, nn.Module], optim: OptimConfig, field: GradientField, stages: Stages = "same"
    ):
        super().__init__(players, optim, field)
        self.stages = stages

    def play(self, game: Game) -> None:
        start = game.point()
        grads, _ = game.grads(game.players)
        for p in game.players:
            game.update(p, grads[p])
        ahead, _ = game.grads(game.players, stage=True)
        game.move(start)
        for p in game.players:
            game.update(p, ahead[p])


@RULES.register("optimistic")
class Optimistic(GameRule):
    """Optimistic gradient (Daskalakis et al. 2018): step along 2∇L(v_k) − ∇L(v_{k−1}), one evaluation per step,
    through each player's optimizer (plain SGD gives v⁺ = v + 2hF(v_k) − hF(v_{k−1})); the previous gradients are
    state (the first step uses the current ones for both)."""

    memory_keys = ("previous",)

    def play(self, game: Game) -> None:
        grads, _ = game.grads(game.players)
        previous = self.memory.get("previous", grads)
        for p in game.players:
            game.update(p, [2 * g - q for g, q in zip(grads[p], previous[p], strict=True)])
        self.memory["previous"] = grads


# ------------------------------------------------------------------------------------------ consensus


def consensus_penalty(gamma: float, players: Sequence[str]) -> Penalty:
    """γ·½‖F(v)‖² for every player: each descends the norm of the whole field."""

    def penalty(grad_of: GradOf) -> dict[str, list[Term]]:
        terms = [Term(gamma, grad_of(q, q), grad_of(q, q)) for q in players]
        return dict.fromkeys(players, terms)

    return penalty


@RULES.register("consensus")
class Consensus(GameRule):
    """Consensus optimization (Mescheder et al. 2017): simultaneous steps along ∇L_p + γ∇_p ½‖F‖², γ = ``gamma``
    (≈ 10 in the paper's experiments, unverified), any optimizer."""

    def __init__(self, players: dict[str, nn.Module], optim: OptimConfig, field: GradientField, gamma: float = 10.0):
        require_at_least("gamma", gamma, 0.0)
        super().__init__(players, optim, field)
        self.gamma = gamma

    def play(self, game: Game) -> None:
        simultaneous(game, consensus_penalty(self.gamma, game.players))


# ------------------------------------------------------------------------------------------ discretization drift


@dataclass(frozen=True)
class DriftTerms:
    """One player's first-order drift: plain GD on L_p implicitly descends
    L_p + self_term·‖∇_p L_p‖² + interaction·(∇_q L_p · sg ∇_q L_q), q the other player."""

    self_term: float
    interaction: float


def drift_terms(lr: dict[str, float], order: Sequence[str] | None, form: DriftForm) -> dict[str, DriftTerms]:
    """The drift coefficients of GD with these learning rates (Rosca et al. 2021): ``order`` None for simultaneous
    updates, else the alternating order. ``derived``: the interaction term scales with the *other* player's lr
    (local error O(h³)) and flips sign for the second mover (−lr_first/2); ``code``: as in discretisation_drift's
    get_dd_coeffs, the player's own lr, and −(lr_first − lr_own/2) for the second mover (O(h²) unless the lrs are
    equal)."""

    def interaction(p: str, q: str) -> float:
        if order is None or p == order[0]:
            return (lr[p] if form == "code" else lr[q]) / 2
        return -(lr[q] - lr[p] / 2) if form == "code" else -lr[q] / 2

    return {p: DriftTerms(lr[p] / 4, interaction(p, other(p))) for p in lr}


def drift_penalty(coefficients: dict[str, tuple[float, float]]) -> Penalty | None:
    """Per player p: c_self‖∇_p L_p‖² + c_int(∇_q L_p · sg ∇_q L_q); None when every coefficient is 0."""
    used = {p: c for p, c in coefficients.items() if any(c)}
    if not used:
        return None

    def penalty(grad_of: GradOf) -> dict[str, list[Term]]:
        out = {}
        for p, (c_self, c_int) in used.items():
            q = other(p)
            terms = [Term(2 * c_self, grad_of(p, p), grad_of(p, p))] if c_self else []
            out[p] = terms + ([Term(c_int, grad_of(p, q), grad_of(q, q))] if c_int else [])
        return out

    return penalty


@RULES.register("drift")
class DriftCorrected(GameRule):
    """Explicit drift regularization (Rosca et al. 2021): simultaneous or alternating steps with the
    discretization-drift terms added to each player's gradient, each scaled by a multiplier (−1 cancels a term, +1
    doubles it), through each player's optimizer. ``correction`` presets the (self, interaction) multipliers of both
    players — cancel-interaction (0, −1), cancel-all (−1, −1), none (0, 0: plain GD) — and ``<player>_self`` /
    ``<player>_interaction`` override single ones. ``updates``: simultaneous, alternating (the discriminator moves
    first) or alternating-generator-first; ``form``: derived (default) or the reference code's coefficients."""

    def __init__(
        self,
        players: dict[str, nn.Module],
        optim: OptimConfig,
        field: GradientField,
        updates: DriftUpdates = "simultaneous",
        correction: DriftCorrection = "cancel-interaction",
        discriminator_self: float | None = None,
        discriminator_interaction: float | None = None,
        generator_self: float | None = None,
        generator_interaction: float | None = None,
        form: DriftForm = "derived",
    ):
        require_roles(players, "drift")
        preset_self, preset_int = DRIFT_PRESETS[correction]
        given = {
            "discriminator": (discriminator_self, discriminator_interaction),
            "generator": (generator_self, generator_interaction),
        }
        multipliers = {
            p: (preset_self if s is None else s, preset_int if i is None else i) for p, (s, i) in given.items()
        }
        for p, values in multipliers.items():
            for kind, value in zip(("self", "interaction"), values, strict=True):
                if not math.isfinite(value):
                    raise ValueError(f"{p}_{kind} must be a finite number, got {value}")
        super().__init__(players, optim, field)
        self.multipliers, self.form = multipliers, form
        first = "generator" if updates == "alternating-generator-first" else "discriminator"
        self.order = None if updates == "simultaneous" else turns(first, 1)

    def play(self, game: Game) -> None:
        terms = drift_terms({p: game.lr(p) for p in game.players}, self.order, self.form)
        coefficients = {
            p: (m_self * terms[p].self_term, m_int * terms[p].interaction)
            for p, (m_self, m_int) in self.multipliers.items()
        }
        if self.order is None:
            simultaneous(game, drift_penalty(coefficients))
        else:
            take_turns(game, self.order, lambda p: drift_penalty({p: coefficients[p]}))


RULES.retire(
    "drift",
    "first",
    "the order is part of updates now: updates=alternating (discriminator first) or alternating-generator-first",
)
