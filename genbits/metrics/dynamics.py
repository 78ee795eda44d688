"""Training-dynamics diagnostics (``train.diagnostics=true``): what the optimizer sees and does, per layer.

Logged into metrics.jsonl at every ``train.log_every`` step and plotted in the report:

- ``grad_norm/<player>`` and ``grad_norm/<player>/<param>``: norms of the gradients the update rule applied
  (before clipping); for rules that update a player several times in a step, the last update is reported;
- ``update_ratio/<player>/<param>``: ‖Δθ‖ / ‖θ‖ of that update, the quantity the "1e-3 per step" rule of thumb
  is about;
- ``spectral_norm/<player>/<param>``: the largest singular value of each weight matrix (conv kernels reshaped to
  (out, in·k·k), as spectral normalization does), by power iteration with persistent vectors (100 warm-up
  iterations, then 50 per logged step: the top singular values of square random-init layers are close, so a
  few iterations lag behind when the top vectors swap during training);
- whatever a player that is :class:`Observed` reports from the step's forward passes, e.g. a transformer's
  ``attention_entropy/layer<i>`` (mean over heads) and ``attention_entropy/layer<i>/head<h>``.

Diagnostics only observe: they never change a parameter or a random stream, so a run with them on trains
exactly as without. The power-iteration vectors are not checkpointed; after a resume they re-converge within
the warm-up iterations.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def matrix_view(weight: Tensor) -> Tensor:
    """A weight as the (out, in·…) matrix spectral normalization works with."""
    return weight.reshape(weight.shape[0], -1)


@torch.no_grad()
def power_iteration(matrix: Tensor, u: Tensor, iterations: int) -> tuple[float, Tensor]:
    """σ_max(matrix) ≈ uᵀ W v after ``iterations`` alternating steps from the left vector ``u``; returns (σ, u)."""
    for _ in range(iterations):
        v = F.normalize(matrix.T @ u, dim=0)
        u = F.normalize(matrix @ v, dim=0)
    return float(u @ matrix @ v), u


@runtime_checkable
class Observed(Protocol):
    """A module that records statistics of its forward passes while ``observing`` is on (logged steps only)."""

    observing: bool

    def observations(self) -> dict[str, float]: ...


def norm(tensors: list[Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors])))


class Dynamics:
    """Collects one record per logged step; the update rule reports each player update through :meth:`observe`."""

    def __init__(self, players: dict[str, nn.Module], warmup_iterations: int = 100, iterations: int = 50):
        self.names = {
            player: [name for name, p in module.named_parameters() if p.requires_grad]
            for player, module in players.items()
        }
        self.players = players
        self.players_params = {
            player: [p for p in module.parameters() if p.requires_grad] for player, module in players.items()
        }
        self.warmup_iterations, self.iterations = warmup_iterations, iterations
        self.vectors: dict[str, Tensor] = {}
        self.observed = [m for m in players.values() if isinstance(m, Observed)]
        self.active = False
        self.record: dict[str, float] = {}

    @property
    def active(self) -> bool:
        """On for logged steps: gradients and updates are measured, observed players record their forward passes."""
        return self._active

    @active.setter
    def active(self, on: bool) -> None:
        self._active = on
        for module in self.observed:
            module.observing = on

    def observe_gradients(self, player: str, grads: list[Tensor]) -> list[Tensor] | None:
        """Record the norms of the gradients about to be applied (before clipping) on logged steps; returns a copy
        of the parameters to measure the update against, or None when this step is not logged."""
        if not self.active:
            return None
        self.record[f"grad_norm/{player}"] = norm(grads)
        for name, g in zip(self.names[player], grads, strict=True):
            self.record[f"grad_norm/{player}/{name}"] = norm([g])
        return [p.detach().clone() for p in self.players_params[player]]

    def observe_update(self, player: str, before: list[Tensor] | None) -> None:
        """Record ‖Δθ‖ / ‖θ‖ of the update just made."""
        if before is None:
            return
        for name, old, new in zip(self.names[player], before, self.players_params[player], strict=True):
            self.record[f"update_ratio/{player}/{name}"] = norm([new.detach() - old]) / max(norm([old]), 1e-12)

    def spectral_norms(self) -> dict[str, float]:
        """σ_max of every weight matrix (≥ 2-D parameter) of every player."""
        out = {}
        for player, module in self.players.items():
            for name, p in module.named_parameters():
                if p.ndim < 2:
                    continue
                key = f"spectral_norm/{player}/{name}"
                matrix = matrix_view(p.detach().float())
                u = self.vectors.get(key)
                if u is None:
                    generator = torch.Generator().manual_seed(len(self.vectors))
                    u = F.normalize(torch.randn(matrix.shape[0], generator=generator), dim=0).to(matrix.device)
                steps = self.iterations if key in self.vectors else self.warmup_iterations
                out[key], self.vectors[key] = power_iteration(matrix, u, steps)
        return out

    def collect(self) -> dict[str, float]:
        """This step's record (with spectral norms at the current weights); resets for the next logged step."""
        observed = {k: v for m in self.observed for k, v in m.observations().items()}
        record, self.record, self.active = self.record | self.spectral_norms() | observed, {}, False
        return record
