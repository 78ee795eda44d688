"""A point mass: all the data at the origin, the data of the Dirac-GAN (Mescheder et al. 2018)."""

from __future__ import annotations

import torch

from genbits.data.base import Batch, SampledDataset, require
from genbits.registry import DATASETS


class PointMass(SampledDataset):
    """Every sample is the origin of ℝ^dim; no density (it is a Dirac), no labels, no randomness."""

    def __init__(self, dim: int):
        require(dim >= 1, f"dim must be >= 1, got {dim}")
        self.event_shape = (dim,)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        return Batch(torch.zeros(n, self.event_shape[0]))


@DATASETS.register("dirac")
def dirac(dim: int = 2) -> PointMass:
    """A point mass at 0 in ``dim`` dimensions (2 by default, so the sample plots are ordinary 2-D scatters)."""
    return PointMass(dim)
