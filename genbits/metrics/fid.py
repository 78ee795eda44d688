"""FID (Heusel et al. 2017), KID (Bińkowski et al. 2018) and improved precision/recall (Kynkäänniemi et al. 2019)
on feature vectors.

genbits's features come from its own small classifiers or a user-provided extractor, so these numbers are not
comparable to Inception-v3 FID from published papers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbits.metrics.features import Statistics, as_features, frechet_distance
from genbits.metrics.mmd import mmd2_from_kernels


def fid(features_a: Tensor | Statistics, features_b: Tensor | Statistics) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets; pass ``Statistics`` to reuse real-data ones."""
    a, b = (f if isinstance(f, Statistics) else Statistics.of(f) for f in (features_a, features_b))
    return frechet_distance(a.mean, a.covariance, b.mean, b.covariance)


def kid(
    features_a: Tensor,
    features_b: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over subsets of the unbiased MMD² with kernel (xᵀy/d + 1)³.

    Defaults follow torch-fidelity (100 subsets × 1000; the original code of Bińkowski et al. uses 50 × 1000).
    Each subset draws ``subset_size`` rows without replacement from each set, capped at the smaller set's size.
    The std is over subsets (ddof 0, as torch-fidelity), a spread of single-subset values, not the error of the mean.
    """
    a, b = as_features(features_a), as_features(features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {a.shape[1]} and {b.shape[1]}")
    size, d = min(subset_size, len(a), len(b)), a.shape[1]

    def kernel(x: Tensor, y: Tensor) -> Tensor:
        return (x @ y.T / d + 1) ** 3

    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=generator)[:size]]
        y = b[torch.randperm(len(b), generator=generator)[:size]]
        values.append(mmd2_from_kernels(kernel(x, x), kernel(y, y), kernel(x, y), unbiased=True))
    values = torch.stack(values)
    return float(values.mean()), float(values.std(correction=0))


def _distances(rows: Tensor, points: Tensor) -> Tensor:
    """Euclidean distances by the matrix-product expansion (what makes 10k × 10k × 2048 take seconds)."""
    return torch.cdist(rows, points, compute_mode="use_mm_for_euclid_dist")


def _kth_neighbour_radii(x: Tensor, k: int, chunk: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row (the row itself, at distance 0, is skipped)."""
    if len(x) <= k:
        raise ValueError(f"need more than k = {k} samples per set, got {len(x)}")
    return torch.cat([_distances(rows, x).topk(k + 1, dim=1, largest=False).values[:, k] for rows in x.split(chunk)])


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 4096) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls as the manifold estimate.

    Precision: share of fake samples inside some real ball; recall: share of real samples inside some fake ball
    (closed balls). The fake × real distances are computed once, ``chunk`` fake rows at a time, and serve both
    directions, so memory is chunk × N floats (330 MB at the default 4096 × 10k), never N × N × D; smaller
    chunks make the matrix products less efficient.
    """
    real, fake = as_features(real), as_features(fake)
    real_radii, fake_radii = _kth_neighbour_radii(real, k, chunk), _kth_neighbour_radii(fake, k, chunk)
    precise, covered = [], torch.zeros(len(real), dtype=torch.bool)
    for rows, radii in zip(fake.split(chunk), fake_radii.split(chunk), strict=True):
        distances = _distances(rows, real)
        precise.append((distances <= real_radii).any(dim=1))
        covered |= (distances <= radii[:, None]).any(dim=0)
    return float(torch.cat(precise).double().mean()), float(covered.double().mean())
