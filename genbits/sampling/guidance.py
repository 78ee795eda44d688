"""Guidance: steer a sampler towards a class by changing the noise it is given; composes with every sampler.

- Classifier-free (Ho & Salimans 2021): ε̃ = (1 + w) ε̂(x, c) − w ε̂(x, ∅), one network trained with and without
  the condition (the null class). w = 0 is the conditional model. diffusers' ``guidance_scale`` is 1 + w
  (ε̂(x, ∅) + g (ε̂(x, c) − ε̂(x, ∅)) with g = 1 + w).
- Classifier (Dhariwal & Nichol 2021, Algorithm 2 in its DDIM form): ε̃ = ε̂ − s √(1 − ᾱ_t) ∇_{x_t} log p(y | x_t),
  with a classifier trained on noisy x_t that sees the noise level.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genbits.models.diffusion import EpsFn, expand

LabelledEps = Callable[[Tensor, int, Tensor], Tensor]
"""ε̂(x, k, labels): the network's noise prediction at level k with explicit labels (the null class included)."""


def classifier_free(eps_fn: LabelledEps, labels: Tensor, null: Tensor, w: float) -> EpsFn:
    """ε̃(x, k) = (1 + w) ε̂(x, k, labels) − w ε̂(x, k, null), both halves in one network call."""
    if w == 0:
        return lambda x, k: eps_fn(x, k, labels)

    def eps(x: Tensor, k: int) -> Tensor:
        cond, uncond = eps_fn(torch.cat([x, x]), k, torch.cat([labels, null])).chunk(2)
        return (1 + w) * cond - w * uncond

    return eps


def classifier_guidance(
    eps_fn: EpsFn, log_prob: Callable[[Tensor, int], Tensor], alpha_bars: Tensor, scale: float
) -> EpsFn:
    """ε̃(x, k) = ε̂(x, k) − s √(1 − ᾱ_k) ∇_x log p(y | x, k); ``log_prob(x, k)`` is (B,) log p(y | x_t) of the
    wanted labels, differentiated by autograd (each example's gradient is its own: the sum has no cross terms)."""

    def eps(x: Tensor, k: int) -> Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_prob(x_in, k).sum(), x_in)
        return eps_fn(x, k) - scale * expand((1 - alpha_bars[k]).sqrt(), x) * grad

    return eps
