"""The optimal noise predictor E[ε | x_t] in closed form, for data whose denoiser is known: a Gaussian and a mixture
of Gaussians. With x_t = a x₀ + s ε (a = √ᾱ, s = √(1 − ᾱ)) and x₀ ~ N(m, S), x_t ~ N(a m, C), C = a² S + s² I and
Cov(ε, x_t) = s I, so E[ε | x_t] = s C⁻¹ (x_t − a m); a mixture averages its components' answers with their
posterior responsibilities. Samplers driven by these must reproduce the data without any training: the tests and
the exact-score study of ``genbits experiment diffusion-samplers`` separate a sampler's discretization error from
the network's."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genbits.models.diffusion import EpsFn


def gaussian_eps(mean: Tensor, cov: Tensor, alpha_bars: Tensor) -> EpsFn:
    """ε̂(x, k) for x₀ ~ N(mean, cov), at the levels ``alpha_bars``: C⁻¹ through cov = U diag(λ) Uᵀ."""
    lam, U = torch.linalg.eigh(cov)

    def eps(x: Tensor, k: int) -> Tensor:
        a, s = alpha_bars[k].sqrt(), (1 - alpha_bars[k]).sqrt()
        z = (x.to(U.dtype) - a * mean) @ U
        return (s * (z / (a**2 * lam + s**2)) @ U.T).to(x.dtype)

    return eps


def mixture_eps(weights: Tensor, means: Tensor, covs: Tensor, alpha_bars: Tensor) -> EpsFn:
    """ε̂(x, k) for x₀ ~ Σ_j w_j N(means[j], covs[j])."""

    def eps(x: Tensor, k: int) -> Tensor:
        a, s = alpha_bars[k].sqrt(), (1 - alpha_bars[k]).sqrt()
        D = means.shape[1]
        C = a**2 * covs + s**2 * torch.eye(D, dtype=covs.dtype)  # (J, D, D)
        diff = x[:, None, :] - a * means[None]  # (B, J, D)
        solved = torch.linalg.solve(C[None], diff.unsqueeze(-1)).squeeze(-1)  # (B, J, D)
        log_r = (
            weights.log()
            - 0.5 * (diff * solved).sum(-1)
            - 0.5 * torch.logdet(C)[None]
            - 0.5 * D * math.log(2 * math.pi)
        )
        r = torch.softmax(log_r, dim=1)  # (B, J) responsibilities
        return (s * (r.unsqueeze(-1) * solved).sum(1)).to(x.dtype)

    return eps
