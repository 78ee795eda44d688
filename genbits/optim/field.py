"""The joint gradient field: every player's gradient of its own loss, evaluated where an update rule asks.

This is the one place that runs the objective under autocast, checks the losses are finite, differentiates, and
all-reduces gradients across processes. Rules that evaluate the field several times per step (RK4, extragradient)
pass ``update_state=False`` after the first evaluation so layer state (BN running statistics, power-iteration
vectors) moves once per step, as in a plain step.

Gradient accumulation (``accumulate`` > 1) evaluates a batch in that many micro-batches, one backward pass each,
and sums their gradients weighted by their share of the batch: for a loss that is a mean over examples this is the
gradient of the whole batch (up to float rounding) with the activation memory of one micro-batch. Penalties are
functions of the whole batch's gradient, not sums over micro-batches, so rules that use them refuse it.

Some rules (consensus optimization, ODE-GAN's regularizer, discretization-drift corrections) also need the gradient
of a *penalty built from gradients*, e.g. ∇_φ‖∇_θ L_G‖². They pass a ``Penalty``: it receives ``grad_of(loss, wrt)``
(a gradient that can itself be differentiated) and returns each penalized player's ``Term``s, which are
differentiated w.r.t. that player's parameters only; those penalty gradients come back separately from the loss
gradients (double backward, in the same evaluation, all-reduced with them).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn

from genbits.data.base import Batch
from genbits.errors import ConfigError, NonFiniteLoss
from genbits.objectives.base import Losses
from genbits.train.distributed import all_reduce_mean, any_process

Grads = dict[str, list[Tensor]]


class Term(NamedTuple):
    """weight·⟨a, sg b⟩, differentiated through ``a`` only: its gradient is weight·(∂a/∂params)ᵀ b.

    Taken as a vector–Jacobian product instead of with ``detach``, so ``b`` still depends on the point for whoever
    differentiates the result once more (the linear analysis). ‖g‖² is Term(2, g, g): its gradient is 2(∂g)ᵀg.
    """

    weight: float
    a: list[Tensor]
    b: list[Tensor]


GradOf = Callable[[str, str], list[Tensor]]  # grad_of(loss player, w.r.t. player), itself differentiable
Penalty = Callable[[GradOf], dict[str, list[Term]]]  # the terms added to each player's loss

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class FieldValue(NamedTuple):
    grads: Grads  # ∇_p L_p for each requested player
    penalty_grads: Grads  # the gradient of each player's penalty terms (empty without a penalty)
    penalties: dict[str, Tensor]  # Σ weight·⟨a, b⟩ per penalized player (detached), checked for finiteness
    losses: Losses


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


def _vjp(
    outputs: list[Tensor], vectors: list[Tensor], params: list[Tensor], retain: bool, graph: bool, scale: float
) -> list[Tensor]:
    """(∂outputs/∂params)ᵀ·vectors, zeros where unused; ``scale`` (fp16 loss scaling) multiplies in, divides out."""
    scaled = scale != 1.0  # fp16 only: skipping two elementwise ops per tensor keeps fp32 steps at plain speed
    used = [(o, v * scale if scaled else v) for o, v in zip(outputs, vectors, strict=True) if o.requires_grad]
    if not used:
        return [torch.zeros_like(p) for p in params]
    found = torch.autograd.grad(
        [o for o, _ in used], params, [v for _, v in used], retain_graph=retain, create_graph=graph, allow_unused=True
    )
    return [
        torch.zeros_like(p) if g is None else g / scale if scaled else g for p, g in zip(params, found, strict=True)
    ]


def _loss_grad(loss: Tensor, params: list[Tensor], retain: bool, graph: bool, scale: float) -> list[Tensor]:
    if loss.dtype != torch.float64:
        loss = loss.float()  # autocast's half-precision losses are differentiated from fp32; fp64 stays fp64
    return _vjp([loss], [torch.ones_like(loss)], params, retain, graph, scale)


def differentiate(
    losses: dict[str, Tensor],
    params: dict[str, list[Tensor]],
    players: Collection[str],
    penalty: Penalty | None = None,
    scale: float = 1.0,
    create_graph: bool = False,
) -> tuple[Grads, Grads, dict[str, Tensor]]:
    """Each requested player's gradient of its own loss, and the gradient of each penalized player's terms.

    ``create_graph`` keeps the results differentiable (the linear analysis takes Jacobians of whole steps).
    """
    graph = create_graph or penalty is not None
    cache: dict[tuple[str, str], list[Tensor]] = {}

    def grad_of(loss: str, wrt: str) -> list[Tensor]:
        if (loss, wrt) not in cache:
            cache[loss, wrt] = _loss_grad(losses[loss], params[wrt], retain=True, graph=True, scale=scale)
        return cache[loss, wrt]

    terms = penalty(grad_of) if penalty is not None else {}
    names = [name for name in losses if name in players]
    grads: Grads = {}
    for i, name in enumerate(names):
        found = cache.get((name, name)) or _loss_grad(
            losses[name], params[name], retain=graph or i < len(names) - 1, graph=create_graph, scale=scale
        )
        grads[name] = found if create_graph else [g.detach() for g in found]
    penalty_grads, values = {}, {}
    for name, player_terms in terms.items():
        outputs = [x for t in player_terms for x in t.a]
        vectors = [t.weight * y for t in player_terms for y in t.b]
        # Under DDP each process holds its shard's a_i; averaging the stop-gradient vectors first makes the mean of
        # J_iᵀ b̄ over processes the gradient of the full batch's ⟨ā, b̄⟩, not the mean of per-shard ⟨a_i, b_i⟩.
        all_reduce_mean(vectors)
        penalty_grads[name] = _vjp(outputs, vectors, params[name], retain=True, graph=create_graph, scale=scale)
        values[name] = torch.stack([(x * y).sum() for x, y in zip(outputs, vectors, strict=True)]).sum().detach()
    return grads, penalty_grads, values


def all_grads(value: FieldValue) -> list[Tensor]:
    return [g for grads in (value.grads, value.penalty_grads) for gs in grads.values() for g in gs]


def non_finite(value: FieldValue) -> dict[str, list[str]]:
    """The names of the non-finite losses and penalties of an evaluation, by kind ('loss', 'penalty').

    One stacked check: a single device sync on a GPU, however many players and penalties."""
    kinds = {"loss": value.losses.per_player, "penalty": value.penalties}
    flat = [(kind, name, v) for kind, scalars in kinds.items() for name, v in scalars.items()]
    finite = torch.isfinite(torch.stack([v.detach().double().reshape(()) for *_, v in flat])).tolist()
    bad: dict[str, list[str]] = {kind: [] for kind in kinds}
    for (kind, name, _), ok in zip(flat, finite, strict=True):
        if not ok:
            bad[kind].append(name)
    return bad


def describe(bad: dict[str, list[str]]) -> str:
    """'the loss of generator and the penalty of discriminator is not finite', or '' when nothing is."""
    parts = [f"the {kind} of {', '.join(names)}" for kind, names in bad.items() if names]
    return f"{' and '.join(parts)} is not finite" if parts else ""


class GradientField:
    def __init__(
        self,
        model: nn.Module,
        objective,
        players: dict[str, nn.Module],
        precision: str = "fp32",
        device: torch.device | str = "cpu",
        accumulate: int = 1,
    ):
        self.model, self.objective, self.accumulate = model, objective, accumulate
        self.params = {name: [p for p in m.parameters() if p.requires_grad] for name, m in players.items()}
        self.device_type = torch.device(device).type
        self.dtype = AUTOCAST.get(precision)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.loss_scale = 2.0**16 if precision == "fp16" else 1.0
        self.evaluations = 0

    def __call__(self, batch: Batch, update_state: bool = True) -> tuple[Grads, Losses]:
        value = self.evaluate(batch, update_state)
        return value.grads, value.losses

    def evaluate(
        self,
        batch: Batch,
        update_state: bool = True,
        players: Collection[str] | None = None,
        penalty: Penalty | None = None,
    ) -> FieldValue:
        """The field at the current parameters: gradients of ``players`` (default: all) and of ``penalty``."""
        players = self.params.keys() if players is None else players
        with nullcontext() if update_state else frozen_buffers(self.model):
            while True:
                value = self._evaluate(batch, players, penalty)
                bad = non_finite(value)
                # every process must take the same branch, or the next collective deadlocks
                if any_process(bool(bad["loss"])):
                    raise NonFiniteLoss(describe(bad) or "a loss is not finite on another process")
                # a penalty is built from scaled gradients: under fp16 loss scaling it overflows like they do
                fp16 = self.dtype == torch.float16
                overflow = bool(bad["penalty"]) or (fp16 and not all(torch.isfinite(g).all() for g in all_grads(value)))
                if not any_process(overflow):
                    break
                if not fp16:
                    raise NonFiniteLoss(describe(bad) or "a penalty is not finite on another process")
                if self.loss_scale <= 1.0:
                    raise NonFiniteLoss(f"fp16 gradients are not finite even without loss scaling ({describe(bad)})")
                self.loss_scale /= 2  # fp16 overflow: evaluate the same point again with a smaller scale
        all_reduce_mean(all_grads(value))
        self.evaluations += 1
        return value

    def _evaluate(self, batch: Batch, players: Collection[str], penalty: Penalty | None) -> FieldValue:
        if self.accumulate == 1:
            return self._evaluate_once(batch, players, penalty)
        if len(batch) < self.accumulate:
            raise ConfigError(
                f"train.accumulate: {self.accumulate} micro-batches need as many examples per process, got {len(batch)}"
            )
        if penalty is not None:
            raise ConfigError(
                "train.accumulate: this update rule differentiates a gradient penalty, which is not a "
                "sum over micro-batches; use train.accumulate=1"
            )
        total = FieldValue({}, {}, {}, Losses({}, {}))
        for index in torch.arange(len(batch)).tensor_split(self.accumulate):
            value = self._evaluate_once(batch[index], players, None)
            weight = len(index) / len(batch)
            for name, grads in value.grads.items():
                old = total.grads.get(name, [0.0] * len(grads))
                total.grads[name] = [a + weight * g for a, g in zip(old, grads, strict=True)]
            for mine, theirs in (
                (total.losses.per_player, value.losses.per_player),
                (total.losses.metrics, value.losses.metrics),
            ):
                for key, v in theirs.items():
                    mine[key] = mine.get(key, 0.0) + weight * v
        return total

    def _evaluate_once(self, batch: Batch, players: Collection[str], penalty: Penalty | None) -> FieldValue:
        autocast = torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        with autocast:
            out = self.objective(self.model, batch)
        return FieldValue(*differentiate(out.per_player, self.params, players, penalty, self.loss_scale), out)
