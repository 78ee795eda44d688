"""A single Gaussian with a learned mean and Cholesky factor: the simplest density model (and a fixed family for
comparing divergences — under reverse KL it collapses onto one mode, under forward KL it spreads over all)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from genbits.models.base import check_how, refuse_condition, standard_normal_log_prob, temperature
from genbits.registry import MODELS


class Gaussian(nn.Module):
    SAMPLING_OPTIONS = ("temperature",)

    def __init__(self, dim: int, full_covariance: bool = True, init_scale: float = 0.0):
        super().__init__()
        self.dim, self.full_covariance = dim, full_covariance
        self.mean = nn.Parameter(torch.zeros(dim))
        if init_scale:  # off the symmetric point: which mode reverse KL picks then depends on the seed
            nn.init.normal_(self.mean, std=init_scale)
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.off_diag = nn.Parameter(torch.zeros(dim * (dim - 1) // 2)) if full_covariance else None
        self.register_buffer("tril_index", torch.tril_indices(dim, dim, offset=-1), persistent=False)

    def scale_tril(self) -> Tensor:
        """L with Σ = L Lᵀ: positive diagonal exp(log_diag), free strictly-lower part."""
        L = torch.diag_embed(self.log_diag.exp())
        if self.off_diag is not None:
            L = L.index_put((self.tril_index[0], self.tril_index[1]), self.off_diag)
        return L

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log N(x; mean, L Lᵀ), shape (B,)."""
        refuse_condition("gaussian", y)
        z = torch.linalg.solve_triangular(self.scale_tril(), (x - self.mean).unsqueeze(-1), upper=False)
        z = z.squeeze(-1)  # (B, D)
        return standard_normal_log_prob(z) - self.log_diag.sum()

    def rsample_and_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        eps = torch.randn(n, self.dim, generator=generator, device=self.mean.device)
        x = self.mean + eps @ self.scale_tril().T
        return x, standard_normal_log_prob(eps) - self.log_diag.sum()

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """n samples (n, dim); ``temperature`` T scales the noise: x = mean + T·L·ε, covariance T²Σ."""
        refuse_condition("gaussian", y)
        check_how("gaussian", how, self.SAMPLING_OPTIONS)
        eps = torch.randn(n, self.dim, generator=generator, device=self.mean.device)
        return self.mean + (temperature(how) * eps) @ self.scale_tril().T


@MODELS.register("gaussian")
def gaussian(event_shape: tuple[int, ...], full_covariance: bool = True, init_scale: float = 0.0) -> Gaussian:
    """``init_scale`` > 0: the mean starts at init_scale·N(0, I) (drawn from the seeded global RNG), not at 0."""
    if len(event_shape) != 1:
        raise ValueError(f"the Gaussian model takes vectors; this dataset has event shape {event_shape}")
    if not init_scale >= 0:
        raise ValueError(f"init_scale must be >= 0, got {init_scale}")
    return Gaussian(event_shape[0], full_covariance, init_scale)
