"""The objective contract: ``objective(model, batch) -> Losses``; objectives never call backward() or step.

Objectives that change over training (KL warm-up, β schedules, loss-weight ramps) subclass ``Objective`` and read
``self.progress``: the loop sets it before every step, so every evaluation within a step (an RK4 step evaluates
the objective four times) sees the same ``Progress``. A schedule is a pure function of (step, total), and the
checkpoint holds the step, so such objectives resume bit for bit with no state of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from genbits.data.base import Batch
from genbits.models.base import Game


@dataclass
class Losses:
    """One loss per player (what its update minimizes) and detached scalars worth logging."""

    per_player: dict[str, Tensor]
    metrics: dict[str, Tensor] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Everything loggable as plain floats: ``loss`` (single player) or ``loss/<player>``, plus metrics."""
        if len(self.per_player) == 1:
            out = {"loss": float(next(iter(self.per_player.values())).detach())}
        else:
            out = {f"loss/{name}": float(loss.detach()) for name, loss in self.per_player.items()}
        out.update({k: float(v) for k, v in self.metrics.items()})
        return out


@dataclass(frozen=True)
class Progress:
    """Where training stands when the objective is evaluated: ``step`` steps done out of ``total``."""

    step: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.step <= self.total or self.total < 1:
            raise ValueError(f"progress needs 0 <= step <= total and total >= 1, got step={self.step}/{self.total}")

    @property
    def fraction(self) -> float:
        """step / total: 0 on the first step, (total − 1)/total on the last."""
        return self.step / self.total


FINISHED = Progress(1, 1)


class Objective:
    """Base class of objectives that may depend on training progress.

    Outside training (evaluation, the linear analysis, a test calling it directly) ``progress`` reads as finished,
    so a scheduled objective is its final self there.
    """

    progress: Progress = FINISHED

    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        raise NotImplementedError


def ramp(progress: Progress, start: float = 0.0, end: float = 1.0) -> float:
    """A weight going linearly from 0 at fraction ``start`` of training to 1 at fraction ``end`` (KL warm-up:
    β = ramp(self.progress, 0, warmup)); ``start == end`` jumps from 0 to 1 there, so ramp(p, 0, 0) is always 1."""
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"ramp needs 0 <= start <= end <= 1, got start={start}, end={end}")
    if progress.fraction >= end:
        return 1.0
    if progress.fraction <= start:
        return 0.0
    return (progress.fraction - start) / (end - start)


def players_of(model: nn.Module) -> dict[str, nn.Module]:
    """The players of a model: ``model.players()`` for a ``Game`` (e.g. generator, discriminator), else one."""
    return model.players() if isinstance(model, Game) else {"model": model}
