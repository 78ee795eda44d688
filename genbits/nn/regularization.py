"""Spectral regularization (Vahdat & Kautz 2020, NVAE §3.2; after Yoshida & Miyato 2017): a loss
λ·(Σ_i σ(W_i) + Σ_j max|γ_j|) over every conv/linear weight W_i (reshaped to (out, in·k·k)) and every batch norm's
scale γ_j. It bounds how fast the network's output can change with its input (each layer's Lipschitz constant),
which NVAE found necessary to keep its deep hierarchy from diverging; the γ term stops batch norm from undoing it.

σ is estimated as spectral normalization does (genbits.nn.norms.SpectralNorm, the same code): uᵀWv with persistent
u moved by power iteration on every training evaluation — NVAE's 40 iterations at first use (here: construction,
when the weights are those of the first step), then 4 per step. The u vectors are buffers, so they are checkpointed
and a resumed run continues exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genbits.nn.norms import SpectralNorm

FIRST_ITERATIONS, ITERATIONS = 40, 4  # NVAE's power iterations at first use, then per step


class SpectralRegularization(nn.Module):
    """``strength`` · (Σ σ(W) + Σ max|γ|) over ``network``'s conv/linear weights and affine batch norms."""

    def __init__(self, network: nn.Module, strength: float):
        super().__init__()
        if not strength > 0:
            raise ValueError(f"spectral regularization strength must be > 0, got {strength}")
        self.strength = strength
        # plain lists, not submodules: the network owns these layers (its state dict must not hold them twice)
        self._layers = [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self._norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
        self.estimators = nn.ModuleList(SpectralNorm(m.weight.detach(), FIRST_ITERATIONS) for m in self._layers)
        self.sigmas()  # the first use's long power iteration
        for estimator in self.estimators:
            estimator.iterations = ITERATIONS

    def sigmas(self) -> Tensor:
        """σ(W) of every weight, (n_layers,): differentiable in W; in training mode each call moves u."""
        return torch.stack([e.sigma(m.weight.flatten(1)) for e, m in zip(self.estimators, self._layers, strict=True)])

    def forward(self) -> Tensor:
        """The loss: strength · (Σ σ(W) + Σ max|γ|)."""
        gammas = [m.weight.abs().max() for m in self._norms]
        total = self.sigmas().sum() + (torch.stack(gammas).sum() if gammas else 0.0)
        return self.strength * total
