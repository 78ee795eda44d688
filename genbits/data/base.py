"""What every dataset offers the training loop: batches of (x, y) with labels travelling from the start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from genbits.train.stream import ExampleNoise


def require(condition: bool, message: str) -> None:
    """Raise the ValueError that the registry reports as a config error naming the option."""
    if not condition:
        raise ValueError(message)


@dataclass
class Batch:
    """One batch. ``y`` holds class labels (mixture component for toys) or None where a dataset has none; ``noise``
    the training stream's per-example noise (``train/stream.py``) for models that draw some, None elsewhere."""

    x: Tensor  # (B, *event_shape)
    y: Tensor | None = None  # (B,) int64
    noise: ExampleNoise | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.x.to(device), None if self.y is None else self.y.to(device), self.noise)

    def __getitem__(self, index: slice | Tensor) -> Batch:
        noise = None if self.noise is None else self.noise[index]
        return Batch(self.x[index], None if self.y is None else self.y[index], noise)

    def __len__(self) -> int:
        return self.x.shape[0]


class SampledDataset:
    """An infinite dataset drawn in code (the 2-D toys). Subclasses implement ``sample``.

    ``log_prob`` is the true log-density where it is known (``has_log_prob`` says so); ``centres`` the true mode
    centres where the data has modes (None otherwise); ``levels`` None: the data is continuous.
    """

    event_shape: tuple[int, ...] = (2,)
    num_classes: int | None = None
    centres: Tensor | None = None
    levels: int | None = None

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no known density")

    @property
    def has_log_prob(self) -> bool:
        return type(self).log_prob is not SampledDataset.log_prob


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """Grey level k = x·(levels − 1) ↦ (k + u)/levels with u ~ U[0, 1): a continuous density on the result
    bounds the discrete likelihood, log P(k) ≥ E_u log p((k + u)/levels) − D·log(levels) (uniform dequantization,
    Theis et al. 2016)."""
    k = (x * (levels - 1)).round()
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (k + u) / levels


class TensorDataset:
    """A finite dataset held in memory: images as floats in [0, 1] with ``levels`` grey levels. Like the drawn
    datasets it says what it knows: no true density, no mode centres."""

    centres: Tensor | None = None
    has_log_prob = False

    def __init__(self, x: Tensor, y: Tensor | None, levels: int, num_classes: int | None, name: str):
        if y is not None and len(y) != len(x):
            raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
        self.x, self.y, self.levels, self.num_classes, self.name = x, y, levels, num_classes, name
        self.event_shape = tuple(x.shape[1:])

    def __len__(self) -> int:
        return len(self.x)

    def get(self, index: Tensor, generator: torch.Generator | None = None) -> Batch:
        """The examples at ``index``; ``generator`` drives datasets that draw as they serve (dynamic binarization)."""
        return Batch(self.x[index], None if self.y is None else self.y[index])
