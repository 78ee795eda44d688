"""Diffusion samplers: plain functions, each a transcription of its paper.

Every sampler takes ``eps_fn(x, k)`` (the predicted noise at the k-th level of the grid), the start ``x`` (noise at
the first level), and ``alpha_bars`` (K,): ᾱ at the K levels of the grid from the noisiest down. After the last
level comes the data itself (ᾱ = 1, "ᾱ_prev = 1 at the last step"). Everything runs in the VP coordinates
x_t = √ᾱ x₀ + √(1 − ᾱ) ε; the ODE samplers step in EDM's x̂ = x_t/√ᾱ = x₀ + σε, σ = √((1 − ᾱ)/ᾱ), where the
probability-flow ODE is dx̂/dσ = ε̂ (Karras et al. 2022, Eq. 4 with s = 1).

Network evaluations (NFE) for K levels: ddpm, ddim and dpm-solver++ K; heun 2K − 1 (the last step is Euler).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genbits.models.diffusion import EpsFn, convert, expand

SAMPLERS = ("ddpm", "ddim", "heun", "dpm-solver++")


def levels(count: int, progress: bool, name: str) -> Iterable[int]:
    """The level indices 0 … count − 1, with a progress bar on a terminal."""
    return tqdm(range(count), desc=name, unit="step", leave=False, disable=None if progress else True)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) drawn on the CPU (a seeded generator gives the same draws on any device)."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def previous(alpha_bars: Tensor, k: int) -> Tensor:
    """ᾱ of the level after k: the next grid level, or 1 (the data) after the last."""
    return alpha_bars[k + 1] if k + 1 < len(alpha_bars) else alpha_bars.new_ones(())


def ddpm(
    eps_fn: EpsFn,
    x: Tensor,
    alpha_bars: Tensor,
    variance: str = "beta-tilde",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): x_{t−1} = (x_t − β_t/√(1 − ᾱ_t) ε̂)/√α_t + σ_t z with
    σ_t² = β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) or β_t, and z = 0 at the last step. On a strided grid β_t = 1 − ᾱ_t/ᾱ_s
    for the next level s (Nichol & Dhariwal 2021, respacing)."""
    for k in levels(len(alpha_bars), progress, "ddpm"):
        ab, ab_prev = alpha_bars[k], previous(alpha_bars, k)
        beta = 1 - ab / ab_prev
        mean = (x - expand(beta / (1 - ab).sqrt(), x) * eps_fn(x, k)) / expand((1 - beta).sqrt(), x)
        if k + 1 == len(alpha_bars):
            return mean
        var = beta * (1 - ab_prev) / (1 - ab) if variance == "beta-tilde" else beta
        x = mean + expand(var.sqrt(), x) * noise_like(x, generator)
    return x


def ddim(
    eps_fn: EpsFn,
    x: Tensor,
    alpha_bars: Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Song et al. 2021 (DDIM), Eq. 12: x̂₀ = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t,
    x_s = √ᾱ_s x̂₀ + √(1 − ᾱ_s − σ²) ε̂ + σ z, σ = η √((1 − ᾱ_s)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_s). η = 0: deterministic;
    η = 1: ancestral sampling with σ² = β̃."""
    for k in levels(len(alpha_bars), progress, "ddim"):
        ab, ab_prev = alpha_bars[k], previous(alpha_bars, k)
        eps = eps_fn(x, k)
        x0 = convert(eps, "eps", "x0", x, ab)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x = expand(ab_prev.sqrt(), x) * x0 + expand((1 - ab_prev - sigma**2).clamp(min=0).sqrt(), x) * eps
        if eta > 0 and k + 1 < len(alpha_bars):
            x = x + expand(sigma, x) * noise_like(x, generator)
    return x


def ddim_encode(eps_fn: EpsFn, x0: Tensor, alpha_bars: Tensor, progress: bool = False) -> Tensor:
    """DDIM run backwards (η = 0): data x₀ → x at the first (noisiest) level, by the same Euler steps of the
    probability-flow ODE in x̂, each using ε̂ at the point it leaves. At the data itself the network is not defined,
    so the first step uses ε̂ of the least noisy level (as diffusers' DDIMInverseScheduler); this error vanishes as
    the grid gets finer, and ``ddim(encode(x₀)) → x₀``."""
    K = len(alpha_bars)
    x = x0
    for j in levels(K, progress, "ddim encode"):
        k = K - 1 - j  # the level we go up to
        ab, ab_from = alpha_bars[k], previous(alpha_bars, k)
        eps = eps_fn(x, min(k + 1, K - 1))
        x0_hat = convert(eps, "eps", "x0", x, ab_from) if k + 1 < K else x
        x = expand(ab.sqrt(), x) * x0_hat + expand((1 - ab).sqrt(), x) * eps
    return x


def sigmas(alpha_bars: Tensor) -> Tensor:
    """σ = √((1 − ᾱ)/ᾱ) at each level, then 0 (the data)."""
    return torch.cat([((1 - alpha_bars) / alpha_bars).sqrt(), alpha_bars.new_zeros(1)])


def heun(
    eps_fn: EpsFn,
    x: Tensor,
    alpha_bars: Tensor,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Karras et al. 2022, Algorithm 1 (deterministic, 2nd order): in x̂ = x/√ᾱ, d = (x̂ − D(x̂; σ))/σ = ε̂;
    x̂' = x̂ + (σ_{i+1} − σ_i) d; unless σ_{i+1} = 0, correct with the slope d' at (x̂', σ_{i+1}):
    x̂_{i+1} = x̂ + (σ_{i+1} − σ_i)(d + d')/2. Returns x̂ at σ = 0, the data."""
    sigma = sigmas(alpha_bars)
    x_hat = x / expand(alpha_bars[0].sqrt(), x)

    def slope(x_hat: Tensor, k: int) -> Tensor:
        return eps_fn(x_hat * expand(alpha_bars[k].sqrt(), x_hat), k)

    for k in levels(len(alpha_bars), progress, "heun"):
        d = slope(x_hat, k)
        step = expand(sigma[k + 1] - sigma[k], x_hat)
        x_next = x_hat + step * d
        if sigma[k + 1] > 0:
            x_next = x_hat + step * (d + slope(x_next, k + 1)) / 2
        x_hat = x_next
    return x_hat


def dpm_solver_2m(
    eps_fn: EpsFn,
    x: Tensor,
    alpha_bars: Tensor,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), multistep in the data prediction x̂₀ with
    λ = log(α/σ_VP): x_i = (σ_i/σ_{i−1}) x − α_i (e^{−h_i} − 1) D_i, h_i = λ_i − λ_{i−1}, where
    D_i = (1 + 1/(2r)) x̂₀_{i−1} − 1/(2r) x̂₀_{i−2}, r = h_{i−1}/h_i, and D = x̂₀ on the first step. The step onto
    the data (σ = 0, λ = ∞) is first order, x = x̂₀ ("lower order final" in the reference code)."""
    alpha = torch.cat([alpha_bars.sqrt(), alpha_bars.new_ones(1)])
    sigma = torch.cat([(1 - alpha_bars).sqrt(), alpha_bars.new_zeros(1)])
    lam = (alpha / sigma).log()  # +inf at the data
    x0_old, h_old = None, None
    for k in levels(len(alpha_bars), progress, "dpm-solver++"):
        x0 = convert(eps_fn(x, k), "eps", "x0", x, alpha_bars[k])
        if sigma[k + 1] == 0:
            return x0
        h = lam[k + 1] - lam[k]
        D = x0 if x0_old is None else (1 + h / (2 * h_old)) * x0 - h / (2 * h_old) * x0_old
        x = expand(sigma[k + 1] / sigma[k], x) * x - expand(alpha[k + 1] * torch.expm1(-h), x) * D
        x0_old, h_old = x0, h
    return x


SAMPLER_FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "heun": heun,
    "dpm-solver++": dpm_solver_2m,
}


def grid_size(sampler: str, nfe: int) -> int:
    """Levels K for a budget of ``nfe`` network evaluations: heun spends 2K − 1, the others K."""
    return (nfe + 1) // 2 if sampler == "heun" else nfe
