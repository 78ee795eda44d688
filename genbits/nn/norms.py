"""Normalization as a constructor argument: activation norms (batch/layer/group, class-conditional batch norm) and
weight norms (spectral normalization by power iteration or by exact SVD), resolved from one small table each.

Spectral normalization (Miyato et al. 2018) divides a weight by its largest singular value σ, so every layer is
1-Lipschitz (conv kernels reshaped to (out, in·k·k), as in the paper — an approximation of the conv's operator norm).
The power-iteration vector ``u`` is a buffer that moves one iteration per training forward pass and persists, so σ
tracks the slowly moving weights cheaply; ``spectral-svd`` computes σ exactly (slow; a reference for comparisons).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

ActivationNorm = Literal["none", "batch", "layer", "group"]
WeightNorm = Literal["none", "spectral", "spectral-svd"]
Norm = Literal["none", "batch", "layer", "group", "spectral", "spectral-svd"]
ACTIVATION_NORMS: tuple[str, ...] = ("none", "batch", "layer", "group")
WEIGHT_NORMS: tuple[str, ...] = ("spectral", "spectral-svd")


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


def spectral_norm(module: nn.Module, exact: bool = False) -> nn.Module:
    """Spectrally normalize ``module.weight`` in place (``torch.nn.utils.parametrize``); returns the module."""
    parametrization = ExactSpectralNorm() if exact else SpectralNorm(module.weight.detach())
    parametrize.register_parametrization(module, "weight", parametrization)
    return module


def weight_normed(module: nn.Module, norm: str) -> nn.Module:
    """``module`` with the weight norm ``norm`` applied ("none" and activation norms leave it as is)."""
    return spectral_norm(module, exact=norm == "spectral-svd") if norm in WEIGHT_NORMS else module


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


def activation_norm(norm: str, channels: int, spatial: bool) -> nn.Module:
    """The activation norm for ``channels`` features (``spatial``: conv maps (B, C, H, W), else (B, C)).

    Layer norm on conv maps normalizes over (C, H, W) per sample (GroupNorm with one group, which has per-channel
    affine parameters); group norm uses groups of up to 8 channels, at most 32 groups (Wu & He 2018).
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels)
    if norm == "group":
        groups = max(1, min(32, channels // 8))
        while channels % groups:
            groups -= 1
        return nn.GroupNorm(groups, channels)
    return nn.Identity()
