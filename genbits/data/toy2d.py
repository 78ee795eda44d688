"""2-D toys generated in code: the mode-coverage and density-estimation benchmarks (the 8-Gaussian ring of
Gulrajani et al. 2017, the 25-Gaussian grid of Srivastava et al. 2017 and Lin et al. 2018).

Every toy draws only from the ``torch.Generator`` it is handed, never from the global RNG, so one seed gives
one batch, bit for bit. Labels travel with the points: mixture component, moon, spiral arm or checker cell.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from genbits.data.base import Batch, SampledDataset, require
from genbits.registry import DATASETS


def _positive(name: str, value: float) -> None:
    require(value > 0 and math.isfinite(value), f"{name} must be a finite number > 0, got {value}")


def _noise(noise: float) -> None:
    require(noise >= 0 and math.isfinite(noise), f"noise must be a finite number >= 0, got {noise}")


class GaussianMixture(SampledDataset):
    """Isotropic Gaussians N(centres[k], std² I) mixed with ``weights``: exact density, y = component."""

    def __init__(self, centres: Tensor, std: float, weights: Tensor | None = None):
        centres = torch.as_tensor(centres, dtype=torch.float32)
        require(
            centres.ndim == 2 and len(centres) >= 1,
            f"centres must have shape (K, D) with K >= 1, got {tuple(centres.shape)}",
        )
        require(bool(torch.isfinite(centres).all()), "centres must be finite")
        _positive("std", std)
        weights = torch.ones(len(centres)) if weights is None else torch.as_tensor(weights).float()
        require(
            weights.shape == (len(centres),),
            f"weights must have shape ({len(centres)},), got {tuple(weights.shape)}",
        )
        require(
            bool(torch.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0),
            "weights must be finite, >= 0 and not all 0",
        )
        self.centres, self.std, self.weights = centres, float(std), weights / weights.sum()
        self.num_classes = len(centres)
        self.event_shape = (centres.shape[1],)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        # Inverse-CDF draw of the component: unlike torch.multinomial it accepts n = 0.
        u = torch.rand(n, generator=generator)
        y = torch.searchsorted(self.weights.cumsum(0), u, right=True).clamp_(max=self.num_classes - 1)
        x = self.centres[y] + self.std * torch.randn(n, self.event_shape[0], generator=generator)
        return Batch(x, y)

    def log_prob(self, x: Tensor) -> Tensor:
        d = x.shape[-1]
        sq = (x.unsqueeze(-2) - self.centres.to(x)).pow(2).sum(-1)  # (..., K)
        log_normal = -0.5 * sq / self.std**2 - d * math.log(self.std) - 0.5 * d * math.log(2 * math.pi)
        return torch.logsumexp(log_normal + self.weights.to(x).log(), dim=-1)


class Moons(SampledDataset):
    """sklearn's two moons drawn from a generator: y = 0 on (cos t, sin t), y = 1 on (1 − cos t, ½ − sin t).

    t ~ U(0, π) (sklearn spaces t evenly instead), then Gaussian noise of std ``noise``. No known density.
    """

    num_classes = 2

    def __init__(self, noise: float):
        _noise(noise)
        self.noise = noise

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        y = torch.randint(0, 2, (n,), generator=generator)
        t = math.pi * torch.rand(n, generator=generator)
        outer = torch.stack([t.cos(), t.sin()], dim=1)
        inner = torch.stack([1 - t.cos(), 0.5 - t.sin()], dim=1)
        x = torch.where(y[:, None] == 0, outer, inner) + self.noise * torch.randn(n, 2, generator=generator)
        return Batch(x, y)


class Spirals(SampledDataset):
    """``n_arms`` Archimedean arms of 1.5 turns from the origin to radius 3; arm k is rotated by 2πk/n_arms.

    On arm k a point at radius r has angle 2π·1.5·r/3 + 2πk/n_arms. r = 3√u, u ~ U(0, 1), so points spread
    roughly evenly along the arm (arc length grows like r) instead of crowding the centre. No known density.
    """

    turns, radius = 1.5, 3.0

    def __init__(self, n_arms: int, noise: float):
        require(n_arms >= 1, f"n_arms must be >= 1, got {n_arms}")
        _noise(noise)
        self.num_classes, self.noise = n_arms, noise

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        y = torch.randint(0, self.num_classes, (n,), generator=generator)
        r = self.radius * torch.rand(n, generator=generator).sqrt()
        angle = 2 * math.pi * (self.turns * r / self.radius + y / self.num_classes)
        x = r[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
        return Batch(x + self.noise * torch.randn(n, 2, generator=generator), y)


class Checkerboard(SampledDataset):
    """Uniform on the black cells of a ``size``×``size`` board of 2×2 cells covering [−size, size]².

    size = 4 is FFJORD's checkerboard on [−4, 4]². Cell (i, j), column i and row j counted from the lower-left
    corner, is black when i + j is even, so the corner cell at (−size, −size) is black. y numbers the black
    cells row by row from that corner. Cells are half-open [a, a + 2), so log_prob is exact everywhere.
    """

    cell = 2.0

    def __init__(self, size: int):
        require(size >= 1, f"size must be >= 1 (cells per side), got {size}")
        self.size = size
        black = [(i, j) for j in range(size) for i in range(size) if (i + j) % 2 == 0]
        self.corners = -size + self.cell * torch.tensor(black, dtype=torch.float32)  # (num_classes, 2)
        self.num_classes = len(black)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        y = torch.randint(0, self.num_classes, (n,), generator=generator)
        return Batch(self.corners[y] + self.cell * torch.rand(n, 2, generator=generator), y)

    def log_prob(self, x: Tensor) -> Tensor:
        inside = ((x >= -self.size) & (x < self.size)).all(-1)
        black = torch.floor((x + self.size) / self.cell).sum(-1).remainder(2) == 0
        density = torch.full_like(x[..., 0], -math.log(self.num_classes * self.cell**2))
        return density.masked_fill(~(inside & black), -math.inf)


@DATASETS.register("ring")
def ring(n_modes: int = 8, radius: float = 2.0, std: float = 0.02) -> GaussianMixture:
    """Gaussians at angles 2πk/n_modes on a circle: the WGAN-GP toy (PacGAN/VEEGAN use radius 1, std 0.01)."""
    require(n_modes >= 1, f"n_modes must be >= 1, got {n_modes}")
    _positive("radius", radius)
    angle = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes  # no endpoint: n modes
    return GaussianMixture(radius * torch.stack([angle.cos(), angle.sin()], dim=1), std)


@DATASETS.register("grid")
def grid(size: int = 5, spacing: float = 2.0, std: float = 0.05) -> GaussianMixture:
    """size×size Gaussians ``spacing`` apart, centred on 0 (5×5 → {−4, −2, 0, 2, 4}²); y is row-major."""
    require(size >= 1, f"size must be >= 1, got {size}")
    _positive("spacing", spacing)
    ticks = spacing * (torch.arange(size, dtype=torch.float64) - (size - 1) / 2)
    rows, cols = torch.meshgrid(ticks, ticks, indexing="ij")
    return GaussianMixture(torch.stack([cols.flatten(), rows.flatten()], dim=1), std)


@DATASETS.register("mog16")
def mog16(std: float = 0.02) -> GaussianMixture:
    """ODE-GAN's MoG-16: a 4×4 grid at {±0.5, ±1.5}²."""
    return grid(size=4, spacing=1.0, std=std)


@DATASETS.register("bimodal")
def bimodal(separation: float = 4.0, std: float = 0.5, weight: float = 0.7, dim: Literal[1, 2] = 2) -> GaussianMixture:
    """Two Gaussians at (∓separation/2, 0) weighted (weight, 1 − weight): reverse KL picks one of them.
    ``dim=1``: the x-marginal, on the line (the divergence lab fits it in 1-D too)."""
    _positive("separation", separation)
    require(0 < weight < 1, f"weight must be in (0, 1), got {weight}")
    half = separation / 2
    centres = torch.tensor([[-half, 0.0], [half, 0.0]])[:, :dim]
    return GaussianMixture(centres, std, torch.tensor([weight, 1 - weight]))


@DATASETS.register("moons")
def moons(noise: float = 0.05) -> Moons:
    return Moons(noise)


@DATASETS.register("spirals")
def spirals(n_arms: int = 2, noise: float = 0.05) -> Spirals:
    return Spirals(n_arms, noise)


@DATASETS.register("checkerboard")
def checkerboard(size: int = 4) -> Checkerboard:
    return Checkerboard(size)
