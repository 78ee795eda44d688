"""Feature statistics and the Fréchet distance between the Gaussians they define (Heusel et al. 2017).

Everything is float64: FID subtracts traces of similar size, so float32 sums lose the digits that matter.
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_features(x: Tensor) -> Tensor:
    """A (N, D) float64 view of a batch of feature vectors; 1-D input is N scalar features."""
    x = torch.as_tensor(x).detach().to(torch.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(x.shape)}")
    return x


class Statistics:
    """Mean and covariance (N − 1 denominator) of features streamed in batches of any size.

    Sums of x and x xᵀ are accumulated in float64 around a fixed shift (the first sample seen), so the result does
    not depend on how the features were batched (torchmetrics #1620 accumulated per-batch statistics in float32) and
    a mean far from 0 does not cancel the covariance digits away.
    """

    def __init__(self) -> None:
        self.n = 0
        self._shift: Tensor | None = None
        self._sum: Tensor | None = None
        self._outer: Tensor | None = None

    def update(self, batch: Tensor) -> Statistics:
        """Add a (B, D) batch of features; returns self so calls chain."""
        x = as_features(batch)
        if len(x) == 0:
            return self
        if self._shift is None:
            self._shift = x[0].clone()
            self._sum = torch.zeros_like(self._shift)
            self._outer = torch.zeros(len(self._shift), len(self._shift), dtype=torch.float64)
        elif x.shape[1] != len(self._shift):
            raise ValueError(f"batch has {x.shape[1]} features, earlier batches had {len(self._shift)}")
        centred = x - self._shift
        self._sum += centred.sum(0)
        self._outer += centred.T @ centred
        self.n += len(x)
        return self

    @classmethod
    def of(cls, features: Tensor, batch_size: int | None = None) -> Statistics:
        """Statistics of a whole (N, D) tensor, fed ``batch_size`` rows at a time (all at once by default)."""
        features = as_features(features)
        stats, step = cls(), batch_size or max(len(features), 1)
        for start in range(0, len(features), step):
            stats.update(features[start : start + step])
        return stats

    @property
    def mean(self) -> Tensor:
        self._require(1)
        return self._shift + self._sum / self.n

    @property
    def covariance(self) -> Tensor:
        self._require(2)
        centred_mean = self._sum / self.n
        return (self._outer - self.n * torch.outer(centred_mean, centred_mean)) / (self.n - 1)

    def _require(self, n: int) -> None:
        if self.n < n:
            raise ValueError(f"need at least {n} feature vectors, got {self.n}")


def _clip_rounding(eigenvalues: Tensor) -> Tensor:
    """Zero the eigenvalues of a PSD matrix that rounding cannot tell from 0 (below D·ε·λ_max, as ``pinv``).

    The square root amplifies them: leaving a rounding-level 1e-16 in each of many null directions adds ~1e-8 each
    to Tr √, so a rank-deficient set would sit ~1e-6 away from itself.
    """
    floor = len(eigenvalues) * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > floor, eigenvalues, torch.zeros_like(eigenvalues))


def _psd_sqrt(sigma: Tensor) -> Tensor:
    """Symmetric square root of a covariance."""
    values, vectors = torch.linalg.eigh(sigma)
    return (vectors * _clip_rounding(values).sqrt()) @ vectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½): the squared 2-Wasserstein distance between two Gaussians.

    Tr (Σ₁Σ₂)^½ is the sum of square roots of the eigenvalues of Σ₁^½ Σ₂ Σ₁^½, which has the eigenvalues of Σ₁Σ₂
    (AB and BA share them). That matrix is symmetric PSD, so ``eigh`` returns real eigenvalues with backward-stable
    accuracy; the general eigensolver on the non-symmetric Σ₁Σ₂ can return spurious complex pairs and negative
    values when the covariances are rank-deficient (fewer samples than features), which is the usual FID case.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    if not (mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == (len(mu1), len(mu1))):
        raise ValueError(
            f"need means of shape (D,) and covariances (D, D) alike, got {tuple(mu1.shape)}, {tuple(sigma1.shape)}, "
            f"{tuple(mu2.shape)}, {tuple(sigma2.shape)}"
        )
    root1 = _psd_sqrt(sigma1)
    product = root1 @ sigma2 @ root1
    eigenvalues = torch.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = _clip_rounding(eigenvalues).sqrt().sum()
    distance = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(distance)
