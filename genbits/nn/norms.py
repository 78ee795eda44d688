"""Normalization resolved once, at the edge: a norm's config name becomes a :class:`Norm`, a pair of small builders
that the networks call — ``activation(channels, spatial)`` for the module after a layer (batch/layer/group norm,
class-conditional batch norm) and ``weight(module)`` for a layer's weight (spectral normalization by power iteration
or by exact SVD). The networks never see the name.

Spectral normalization (Miyato et al. 2018) divides a weight by its largest singular value σ, so every layer is
1-Lipschitz (conv kernels reshaped to (out, in·k·k), as in the paper — an approximation of the conv's operator norm).
The power-iteration vector ``u`` is a buffer that moves one iteration per training forward pass and persists, so σ
tracks the slowly moving weights cheaply; ``spectral-svd`` computes σ exactly (slow; a reference for comparisons).

σReparam (Zhai et al. 2023, "Stabilizing Transformer Training by Preventing Attention Entropy Collapse") keeps the
scale learnable: Ŵ = (γ/σ(W))·W with one power iteration per training step, the gradient flowing through σ, and γ
initialised to σ(W_init) (Ŵ = W at the start; ``sigma-reparam``) or to 1 (``sigma-reparam-one``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

NormName = Literal["none", "batch", "layer", "group", "spectral", "spectral-svd", "sigma-reparam", "sigma-reparam-one"]
ActivationNorm = Callable[[int, bool], nn.Module]
"""(channels, spatial) → the module normalizing a layer's output: (B, C, H, W) maps if spatial, else (B, C)."""
WeightNorm = Callable[[nn.Module], nn.Module]
"""module → the same module with its ``weight`` normalized (or untouched)."""
M = TypeVar("M", bound=nn.Module)


class SpectralNorm(nn.Module):
    """Parametrization W ↦ W / σ(W), σ by ``iterations`` power iterations per training forward from a persistent u."""

    def __init__(self, weight: Tensor, iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        self.iterations, self.eps = iterations, eps
        rows = weight.shape[0]
        generator = torch.Generator().manual_seed(rows)  # a fixed start: building a net never consumes the global RNG
        u = F.normalize(torch.randn(rows, generator=generator), dim=0, eps=eps)
        self.register_buffer("u", u.to(weight.device, weight.dtype))

    def sigma(self, matrix: Tensor) -> Tensor:
        """σ estimate uᵀWv with u, v treated as constants (the paper's gradient)."""
        u = self.u
        if self.training:
            with torch.no_grad():
                for _ in range(self.iterations):
                    v = F.normalize(matrix.T @ u, dim=0, eps=self.eps)
                    u = F.normalize(matrix @ v, dim=0, eps=self.eps)
                self.u.copy_(u)
        v = F.normalize(matrix.T @ u, dim=0, eps=self.eps).detach()
        return u @ matrix @ v

    def forward(self, weight: Tensor) -> Tensor:
        return weight / self.sigma(weight.flatten(1))


class ExactSpectralNorm(nn.Module):
    """W ↦ W / σ_max(W) with σ from an SVD every call: exact, differentiable, and slow on big layers."""

    def forward(self, weight: Tensor) -> Tensor:
        return weight / torch.linalg.matrix_norm(weight.flatten(1), ord=2)


class SigmaReparam(SpectralNorm):
    """Ŵ = (γ/σ(W))·W: spectral normalization times a learnable scalar γ (Zhai et al. 2023).

    ``warmup`` power iterations at registration make σ(W_init) accurate, so ``gamma="sigma"`` starts at Ŵ = W."""

    def __init__(self, weight: Tensor, gamma: Literal["sigma", "one"] = "sigma", warmup: int = 15):
        super().__init__(weight, iterations=warmup)
        matrix = weight.detach().flatten(1)
        start = self.sigma(matrix).detach() if gamma == "sigma" else torch.ones((), dtype=weight.dtype)
        self.iterations = 1
        self.gamma = nn.Parameter(start.to(weight.device, weight.dtype))

    def forward(self, weight: Tensor) -> Tensor:
        return weight * (self.gamma / self.sigma(weight.flatten(1)))


def sigma_reparam(module: M, gamma: Literal["sigma", "one"] = "sigma") -> M:
    """σReparam on ``module.weight`` in place; returns the module."""
    parametrize.register_parametrization(module, "weight", SigmaReparam(module.weight.detach(), gamma))
    return module


def spectral_norm(module: M, exact: bool = False) -> M:
    """Spectrally normalize ``module.weight`` in place (``torch.nn.utils.parametrize``); returns the module."""
    parametrization = ExactSpectralNorm() if exact else SpectralNorm(module.weight.detach())
    parametrize.register_parametrization(module, "weight", parametrization)
    return module


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al. 2017; BigGAN's generator):
    conditioning reaches every layer instead of only the input. Scales start at 1 and shifts at 0."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(channels, affine=False)
        self.scale, self.shift = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        flat = x.flatten(2) if x.ndim > 2 else x.unsqueeze(-1)  # (B, C, L): BatchNorm1d covers 2-D and 4-D alike
        normed = self.norm(flat).view_as(x)
        shape = (len(x), -1) + (1,) * (x.ndim - 2)
        return normed * self.scale(y).view(shape) + self.shift(y).view(shape)


def no_norm(channels: int, spatial: bool) -> nn.Module:
    return nn.Identity()


def batch_norm(channels: int, spatial: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)


def layer_norm(channels: int, spatial: bool) -> nn.Module:
    """On conv maps: over (C, H, W) per sample (GroupNorm with one group, which has per-channel affine parameters)."""
    return nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels)


def group_norm(channels: int, spatial: bool) -> nn.Module:
    """Groups of up to 8 channels, at most 32 groups (Wu & He 2018)."""
    groups = max(1, min(32, channels // 8))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def class_batch_norm(num_classes: int) -> ActivationNorm:
    """Batch norm with per-class scale and shift: the builder a ``throughout``-conditioned generator gets."""

    def build(channels: int, spatial: bool) -> nn.Module:
        return ConditionalBatchNorm(channels, num_classes)

    return build


def unchanged(module: M) -> M:
    return module


ACTIVATION_NORMS: dict[str, ActivationNorm] = {
    "none": no_norm,
    "batch": batch_norm,
    "layer": layer_norm,
    "group": group_norm,
}
WEIGHT_NORMS: dict[str, WeightNorm] = {
    "spectral": spectral_norm,
    "spectral-svd": partial(spectral_norm, exact=True),
    "sigma-reparam": sigma_reparam,
    "sigma-reparam-one": partial(sigma_reparam, gamma="one"),
}


def activation_norm(norm: str, channels: int, spatial: bool) -> nn.Module:
    """The activation norm ``norm`` for ``channels`` features (``spatial``: conv maps (B, C, H, W), else (B, C))."""
    return ACTIVATION_NORMS[norm](channels, spatial)


@dataclass(frozen=True)
class Norm:
    """What a network does to its activations and to its weights, as builders: one name picks one of the two (an
    activation norm leaves weights alone, a weight norm puts nothing after a layer)."""

    activation: ActivationNorm = no_norm
    weight: WeightNorm = unchanged

    @classmethod
    def named(cls, name: NormName, num_classes: int | None = None) -> Norm:
        """The norm called ``name``; ``num_classes`` makes batch norm class-conditional (other norms refuse it)."""
        if name in WEIGHT_NORMS:
            built = cls(weight=WEIGHT_NORMS[name])
        elif name in ACTIVATION_NORMS:
            built = cls(activation=ACTIVATION_NORMS[name])
        else:
            raise ValueError(f"unknown norm {name!r}; use one of {', '.join([*ACTIVATION_NORMS, *WEIGHT_NORMS])}")
        if num_classes is None:
            return built
        if name != "batch":
            raise ValueError(f"class-conditional norms are batch norms; {name!r} has no per-class form")
        return cls(activation=class_batch_norm(num_classes))
