"""The objective contract: ``objective(model, batch) -> Losses``; objectives never call backward() or step."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn


@dataclass
class Losses:
    """One loss per player (what its update minimizes) and detached scalars worth logging."""

    losses: dict[str, Tensor]
    metrics: dict[str, Tensor] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Everything loggable as plain floats: ``loss`` (single player) or ``loss/<player>``, plus metrics."""
        if len(self.losses) == 1:
            out = {"loss": float(next(iter(self.losses.values())).detach())}
        else:
            out = {f"loss/{name}": float(loss.detach()) for name, loss in self.losses.items()}
        out.update({k: float(v) for k, v in self.metrics.items()})
        return out


def players_of(model: nn.Module) -> dict[str, nn.Module]:
    """The players of a model: ``model.players()`` for games (e.g. generator, discriminator), else one player."""
    players = getattr(model, "players", None)
    return players() if callable(players) else {"model": model}
