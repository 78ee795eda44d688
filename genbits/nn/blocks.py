"""Denoiser building blocks: the conditioned residual block (on vectors or on conv maps), self-attention over the
pixels, and the UNet's down/up-sampling layers. They follow DDPM (Ho et al. 2020) as improved by Dhariwal & Nichol
2021 ("Diffusion models beat GANs on image synthesis"): the condition embedding reaches every residual block as a
per-channel scale and shift after the second norm (their "AdaGN"), and attention is a residual layer.

The norm is a :class:`~genbits.nn.norms.Norm` (activation norm after a layer, weight norm on a layer) and the
nonlinearity a builder, both constructor arguments; the layer shapes match diffusers' ``ResnetBlock2D``
(``resnet_time_scale_shift="scale_shift"``), ``Attention``, ``Downsample2D`` and ``Upsample2D``, so a genbits UNet
and a diffusers ``UNet2DModel`` of the same architecture have the same parameters.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from genbits.nn.activations import Activation
from genbits.nn.norms import Norm


class ResidualBlock(nn.Module):
    """h = layer₁(act(norm₁(x))); h = norm₂(h)·(1 + scale) + shift with (scale, shift) = linear(act(emb));
    out = skip(x) + layer₂(dropout(act(h))). ``spatial``: 3×3 convs on (B, C, H, W) maps (skip: 1×1 conv when
    the channels change), else linear layers on (B, C) vectors."""

    def __init__(
        self,
        cin: int,
        cout: int,
        emb: int,
        norm: Norm,
        activation: Activation,
        dropout: float = 0.0,
        spatial: bool = True,
    ):
        super().__init__()
        self.spatial = spatial

        def layer(a: int, b: int, kernel: int) -> nn.Module:
            return norm.weight(nn.Conv2d(a, b, kernel, padding=kernel // 2) if spatial else nn.Linear(a, b))

        self.norm1, self.layer1 = norm.activation(cin, spatial), layer(cin, cout, 3)
        self.condition = nn.Sequential(activation(), nn.Linear(emb, 2 * cout))
        self.norm2, self.layer2 = norm.activation(cout, spatial), layer(cout, cout, 3)
        self.act, self.dropout = activation(), nn.Dropout(dropout)
        self.skip = layer(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.layer1(self.act(self.norm1(x)))  # (B, cout, ...)
        scale, shift = self.condition(emb).chunk(2, dim=1)  # 2 × (B, cout)
        if self.spatial:
            scale, shift = scale[:, :, None, None], shift[:, :, None, None]
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.layer2(self.dropout(self.act(h)))


class SelfAttention(nn.Module):
    """x + out(attention(q, k, v)) over the H·W positions of norm(x), ``channels // head_dim`` heads:
    (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int, norm: Norm, head_dim: int):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"attention over {channels} channels needs head_dim dividing it, got {head_dim}")
        self.heads = channels // head_dim
        self.norm = norm.activation(channels, True)
        self.qkv = norm.weight(nn.Linear(channels, 3 * channels))
        self.out = norm.weight(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        attended = attended.transpose(1, 2).reshape(b, h * w, c)  # (B, HW, C)
        return x + self.out(attended).transpose(1, 2).view(b, c, h, w)


class Downsample(nn.Module):
    """3×3 conv with stride 2: (B, C, H, W) → (B, C, ⌈H/2⌉, ⌈W/2⌉) (7×7 → 4×4)."""

    def __init__(self, channels: int, norm: Norm):
        super().__init__()
        self.conv = norm.weight(nn.Conv2d(channels, channels, 3, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to ``size`` (the matching skip connection's, so 4×4 → 7×7 undoes 7×7 → 4×4), then a
    3×3 conv: (B, C, h, w) → (B, C, *size)."""

    def __init__(self, channels: int, norm: Norm):
        super().__init__()
        self.conv = norm.weight(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))
