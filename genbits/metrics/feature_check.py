"""Sanity checks of a feature net (``genbits features check``): does its FID see what a person would see?

Two disjoint halves of the test split should be close; the same half blurred or noised should be far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genbits.data import build_dataset
from genbits.errors import ConfigError
from genbits.metrics.extractors import feature_net_extractor, load_feature_net, shipped
from genbits.metrics.feature_training import accuracy
from genbits.metrics.fid import fid, kid


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (radius 3σ, reflected borders)."""
    radius = max(1, round(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1))


def check(name: str, blur_sigma: float = 1.0, noise_std: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """Test accuracy of the net, and FID/KID of half A of the test split against half B, blurred B and noised B."""
    path = shipped().get(name, Path(name))
    if not path.is_file():
        raise ConfigError(f"features: {name!r} is neither a shipped net ({', '.join(shipped())}) nor a file")
    net, metadata = load_feature_net(path)
    test = build_dataset(metadata["dataset"], metadata.get("options", {}), split="test", seed=seed)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test.x), generator=generator)
    half_a, half_b = test.x[order[: len(order) // 2]], test.x[order[len(order) // 2 :]]
    noised = (half_b + noise_std * torch.randn(half_b.shape, generator=generator)).clamp(0, 1)
    features = feature_net_extractor(path)
    real = features(half_a)
    result: dict[str, Any] = {"dataset": metadata["dataset"], "test_accuracy": accuracy(net, test.x, test.y)}
    result["n_per_half"] = len(half_b)
    for label, images in (
        ("halves", half_b),
        (f"blur σ={blur_sigma}", gaussian_blur(half_b, blur_sigma)),
        (f"noise σ={noise_std}", noised),
    ):
        other = features(images)
        result[f"fid {label}"] = fid(real, other)
        result[f"kid {label}"] = kid(real, other, generator=torch.Generator().manual_seed(seed))[0]
    return result
