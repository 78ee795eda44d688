"""The Dirac-GAN (Mescheder et al. 2018, Section 2): the smallest game that shows whether an update rule converges.

The data is a point mass at 0 (``data: dirac``), the generator a point mass at θ, the discriminator D(x) = φᵀx.
With the logistic GAN losses (``objective: gan``, minimax or non-saturating) the only equilibrium is θ = φ = 0,
where the field's Jacobian has eigenvalues ±i f'(0) with f'(0) = σ(0) = ½: a pure rotation, so the update rule
alone decides whether training spirals out, circles or converges.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from genbits.models.base import check_how, refuse_condition
from genbits.registry import MODELS


class PointMassGenerator(nn.Module):
    """G(z) = θ for every z: all the mass at one learned point."""

    def __init__(self, dim: int, value: float):
        super().__init__()
        self.theta = nn.Parameter(torch.full((dim,), value))

    def forward(self, z: Tensor) -> Tensor:
        return self.theta.expand(len(z), -1)  # (B, D)


class LinearCritic(nn.Module):
    """D(x) = φᵀx, a logit."""

    def __init__(self, dim: int, value: float):
        super().__init__()
        self.phi = nn.Parameter(torch.full((dim,), value))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.phi  # (B,)


class DiracGan(nn.Module):
    SAMPLING_OPTIONS: tuple[str, ...] = ()

    def __init__(self, dim: int, theta: float, phi: float):
        super().__init__()
        self.generator = PointMassGenerator(dim, theta)
        self.discriminator = LinearCritic(dim, phi)

    def players(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def sample_latent(self, n: int) -> Tensor:
        """No latent: an empty (n, 0) batch, so the game draws no random numbers."""
        theta = self.generator.theta
        return torch.zeros(n, 0, dtype=theta.dtype, device=theta.device)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """n copies of θ: no noise, so no sampling option means anything."""
        refuse_condition("dirac-gan", y)
        check_how("dirac-gan", how, self.SAMPLING_OPTIONS)
        return self.generator(self.sample_latent(n)).clone()


@MODELS.register("dirac-gan")
def dirac_gan(event_shape: tuple[int, ...], theta: float = 1.0, phi: float = 1.0) -> DiracGan:
    """The Dirac-GAN on the dataset's dimension, every coordinate of θ and φ starting at ``theta`` and ``phi``."""
    if len(event_shape) != 1:
        raise ValueError(f"the Dirac-GAN takes vectors; this dataset has event shape {tuple(event_shape)}")
    return DiracGan(event_shape[0], theta, phi)
