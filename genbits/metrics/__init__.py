"""Sample-quality metrics: FID/KID/precision-recall on features, mode coverage, MMD, Wasserstein, likelihood units."""

from genbits.metrics.features import Statistics, frechet_distance
from genbits.metrics.fid import fid, kid, precision_recall
from genbits.metrics.likelihood import bits_per_dim, dequantized_nll
from genbits.metrics.mmd import mmd2, sliced_wasserstein, wasserstein1_1d, wasserstein_exact
from genbits.metrics.modes import mode_coverage

__all__ = [
    "Statistics",
    "bits_per_dim",
    "dequantized_nll",
    "fid",
    "frechet_distance",
    "kid",
    "mmd2",
    "mode_coverage",
    "precision_recall",
    "sliced_wasserstein",
    "wasserstein1_1d",
    "wasserstein_exact",
]
