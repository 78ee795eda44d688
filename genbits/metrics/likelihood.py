"""Likelihood units: nats to bits per dimension (bits per character for text), perplexity, and the dequantization
bound for discrete data."""

from __future__ import annotations

import math

from torch import Tensor


def bits_per_dim(nll_nats: float | Tensor, dims: int) -> float | Tensor:
    """NLL in nats per example → bits per dimension: nll / (dims · ln 2)."""
    return nll_nats / (dims * math.log(2))


def perplexity(nll_nats: float | Tensor, symbols: int) -> float | Tensor:
    """NLL in nats of a sequence of ``symbols`` → perplexity exp(nll / symbols) = 2^(bits per symbol)."""
    return math.exp(nll_nats / symbols) if isinstance(nll_nats, (int, float)) else (nll_nats / symbols).exp()


def dequantized_nll(nll_continuous_on_scaled_data: float | Tensor, levels: int, dims: int) -> float | Tensor:
    """Upper bound, in nats, on the discrete NLL of x ∈ {0, …, L − 1}^dims from a density on scaled data.

    Convention: the model's density p is on y = (x + u) / L with u ~ U[0, 1)^dims, so y ∈ [0, 1)^dims. The density
    of x + u is p(y) / L^dims, and by Jensen −log P(x) ≤ E_u[−log p(y)] + dims · log L. The argument is that
    expectation, E_u[−log p(y)]; a uniform p on [0, 1)^dims gives exactly dims · log L (log₂ L bits per dim).
    """
    if levels < 2 or dims < 1:
        raise ValueError(f"need levels >= 2 and dims >= 1, got {levels} and {dims}")
    return nll_continuous_on_scaled_data + dims * math.log(levels)
