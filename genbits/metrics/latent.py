"""Likelihood estimates and diagnostics of latent-variable models (an encoder q(z | x) and a decoder p(x | z)).

- :func:`importance_sampled` gives log p̂(x) = log (1/K) Σ_i w_i, w_i = p(x, z_i)/q(z_i | x), z_i ~ q(z | x): the
  IWAE bound at k = K (Burda et al. 2016) and, for large K, the importance-sampled estimate of log p(x) (its
  expectation is a lower bound that tightens as K grows, so the NLL it gives errs high). Weights are drawn in chunks
  and folded into running log-sums, so K = 5,000 needs no more memory than one chunk. With the estimate comes its
  Monte Carlo standard error by the delta method, se(log p̂) ≈ √((mean w² / (mean w)² − 1)/K).
- :func:`active_units`: units whose posterior mean varies over the data, Cov_x(E_q[z_u]) > 0.01 (Burda et al. 2016).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genbits.models.latent import ImportanceWeighted

ACTIVITY_THRESHOLD = 0.01


@torch.no_grad()
def importance_sampled(model: ImportanceWeighted, x: Tensor, k: int, evaluations: int = 4096) -> tuple[Tensor, Tensor]:
    """(log p̂(x), its Monte Carlo standard error), (B,) each, from k importance samples per example; at most
    ``evaluations`` decoder passes at a time (examples × samples)."""
    if k < 1:
        raise ValueError(f"k (importance samples) must be >= 1, got {k}")
    examples = max(1, evaluations // k)
    estimates, errors = [], []
    for chunk in x.split(examples):
        per_draw = max(1, evaluations // len(chunk))
        log_sum = torch.full((len(chunk),), -math.inf, dtype=torch.float64, device=x.device)
        log_sum_sq = log_sum.clone()
        for start in range(0, k, per_draw):
            weights = model.log_weights(chunk, None, min(per_draw, k - start)).double()
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(weights, 0))
            log_sum_sq = torch.logaddexp(log_sum_sq, torch.logsumexp(2 * weights, 0))
        log_mean, log_mean_sq = log_sum - math.log(k), log_sum_sq - math.log(k)
        relative_variance = torch.expm1(log_mean_sq - 2 * log_mean).clamp(min=0)  # Var(w)/E[w]², ≥ 0
        estimates.append(log_mean)
        errors.append(torch.sqrt(relative_variance / k))
    return torch.cat(estimates), torch.cat(errors)


@torch.no_grad()
def active_units(posterior_means: Tensor, threshold: float = ACTIVITY_THRESHOLD) -> tuple[int, Tensor]:
    """(number of active units, each unit's activity Cov_x(E_q[z_u])) from posterior means (N, units)."""
    activity = posterior_means.double().var(0)
    return int((activity > threshold).sum()), activity
