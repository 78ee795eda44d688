"""Datasets: 2-D toys drawn in code and finite image sets read from disk, all registered in ``DATASETS``."""

from genbits.data import dirac, images, text, toy2d  # noqa: F401  (importing them registers their factories)
from genbits.data.base import Batch, SampledDataset, TensorDataset
from genbits.data.images import read_idx
from genbits.data.toy2d import GaussianMixture
from genbits.registry import DATASETS


def build_dataset(name: str, options: dict, split: str = "train", seed: int = 0) -> SampledDataset | TensorDataset:
    """Build a registered dataset; a bad option raises ConfigError naming ``data.<option>``."""
    return DATASETS.build(name, options, where="data", split=split, seed=seed)


__all__ = ["Batch", "GaussianMixture", "SampledDataset", "TensorDataset", "build_dataset", "read_idx"]
