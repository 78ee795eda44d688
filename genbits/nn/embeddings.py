"""What a denoiser is told besides x: the noise level and, for a conditional net, the class.

The noise level is one float per example whose meaning the diffusion model decides (t/T for discrete schedules,
EDM's ln(σ)/4 for σ-parametrized ones); the net only needs distinct inputs to give distinct embeddings, so it is
multiplied by ``scale`` (1000: t/T ∈ [0, 1] then spans the integer timesteps of DDPM) before the sinusoidal
features of the Transformer (Vaswani et al. 2017, "Attention is all you need"), used for timesteps by DDPM
(Ho et al. 2020), and an MLP. The class embedding has one extra row, index ``num_classes``: the learned null class
that classifier-free guidance (Ho & Salimans 2021) trains by dropping labels and samples with as ε(x, ∅).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genbits.nn.activations import Activation


def sinusoidal(values: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """[cos(v·ω_k), sin(v·ω_k)] for ω_k = max_period^(−k/(dim/2)), k < dim/2: (B,) → (B, dim). The cos-first order
    and frequencies are DDPM's as diffusers writes them (``flip_sin_to_cos=True``, ``downscale_freq_shift=0``)."""
    if dim % 2:
        raise ValueError(f"a sinusoidal embedding needs an even dimension, got {dim}")
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device) / half)
    angles = values.float()[:, None] * frequencies  # (B, dim/2)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)  # (B, dim)


class NoiseLevelEmbedding(nn.Module):
    """noise (B,) → sinusoidal(scale · noise) (B, dim) → linear → activation → linear → (B, out)."""

    def __init__(self, dim: int, out: int, activation: Activation = nn.SiLU, scale: float = 1000.0):
        super().__init__()
        self.dim, self.scale = dim, scale
        self.mlp = nn.Sequential(nn.Linear(dim, out), activation(), nn.Linear(out, out))

    def forward(self, noise: Tensor) -> Tensor:
        return self.mlp(sinusoidal(self.scale * noise, self.dim).to(self.mlp[0].weight.dtype))


class ClassEmbedding(nn.Module):
    """y (B,) with entries in [0, num_classes], or None → (B, out). Index ``num_classes`` (and y=None) is the
    learned null class: "no condition"."""

    def __init__(self, num_classes: int, out: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, out)

    def forward(self, y: Tensor | None, batch: int) -> Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.table.weight.device)
        return self.table(y)


class ConditionEmbedding(nn.Module):
    """The sum of the noise-level and (for a conditional net) class embeddings: one vector (B, out) per example
    that conditions every residual block. An unconditional net refuses labels."""

    def __init__(self, dim: int, out: int, num_classes: int | None, activation: Activation = nn.SiLU):
        super().__init__()
        self.noise = NoiseLevelEmbedding(dim, out, activation)
        self.classes = ClassEmbedding(num_classes, out) if num_classes else None

    def forward(self, noise: Tensor, y: Tensor | None) -> Tensor:
        embedding = self.noise(noise)  # (B, out)
        if self.classes is not None:
            return embedding + self.classes(y, len(noise))
        if y is not None:
            raise ValueError("an unconditional denoiser takes no labels y")
        return embedding
