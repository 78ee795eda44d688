"""The image denoiser: the UNet of DDPM (Ho et al. 2020) with the improvements of Dhariwal & Nichol 2021
("Diffusion models beat GANs on image synthesis"): residual blocks conditioned by scale/shift from the (noise level
+ class) embedding in every block, self-attention at chosen resolutions, dropout, channel multipliers per level.

Levels halve the resolution with stride-2 convs (⌈H/2⌉: 28 → 14 → 7 → 4) and the way up resizes to the matching
skip connection's size, so any image size works, odd intermediate sizes included. The layout — which block feeds
which skip, where attention sits — is diffusers' ``UNet2DModel`` with ``resnet_time_scale_shift="scale_shift"``,
so the two have the same parameters for the same architecture (tests/test_unet.py counts them).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from genbits.nn.activations import Activation
from genbits.nn.blocks import Downsample, ResidualBlock, SelfAttention, Upsample
from genbits.nn.embeddings import ConditionEmbedding
from genbits.nn.norms import Norm


class Level(nn.Module):
    """The residual blocks (each followed by attention or nothing) of one resolution, and the resampling after them."""

    def __init__(
        self, blocks: list[ResidualBlock], attend: bool, norm: Norm, head_dim: int, resample: nn.Module | None
    ):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        channels = [block.layer2.out_channels for block in blocks]
        self.attentions = nn.ModuleList(SelfAttention(c, norm, head_dim) if attend else nn.Identity() for c in channels)
        self.resample = resample


class Encoder(nn.Module):
    """The UNet's way down and middle: x (B, C, H, W) → the deepest map (B, C', h, w), the condition embedding and
    the skip connections. Alone (with a pooling head) it is the noise-conditional classifier's body, as in Dhariwal
    & Nichol 2021.

    ``channels`` × ``multipliers[i]`` channels at level i (level i has resolution ⌈H/2^i⌉), ``num_res_blocks``
    residual blocks per level, self-attention after every block of the levels whose resolution is in
    ``attention`` (default: the deepest level's) and in the middle block (residual, attention, residual).
    ``num_classes``: labels in [0, num_classes], the last being the learned null class."""

    def __init__(
        self,
        shape: Sequence[int],
        channels: int = 32,
        multipliers: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention: Sequence[int] | None = None,
        num_classes: int | None = None,
        norm: Norm | None = None,
        activation: Activation = nn.SiLU,
        dropout: float = 0.0,
        head_dim: int = 32,
    ):
        super().__init__()
        norm = norm or Norm.named("group")
        if len(shape) != 3:
            raise ValueError(f"a UNet takes images (C, H, W); got shape {tuple(shape)}")
        if channels < 1 or num_res_blocks < 1 or not multipliers or min(multipliers) < 1:
            raise ValueError("channels, num_res_blocks and every multiplier must be >= 1")
        self.shape, self.num_res_blocks = tuple(shape), num_res_blocks
        if num_classes:
            self.num_classes = num_classes
        sizes = [self.shape[-1]]
        for _ in multipliers[1:]:
            sizes.append((sizes[-1] + 1) // 2)
        attention = (sizes[-1],) if attention is None else tuple(attention)
        self.attention, self.dropout, self.head_dim = attention, dropout, head_dim
        if missing := sorted(set(attention) - set(sizes)):
            raise ValueError(f"attention at resolutions {missing}: this UNet's levels have resolutions {sizes}")
        self.sizes, self.widths = sizes, [channels * m for m in multipliers]
        widths, emb = self.widths, 4 * self.widths[0]
        self.embed = ConditionEmbedding(widths[0], emb, num_classes, activation)
        self.block = partial(ResidualBlock, emb=emb, norm=norm, activation=activation, dropout=dropout)
        self.input = norm.weight(nn.Conv2d(self.shape[0], widths[0], 3, padding=1))
        ch, self.skip_channels = widths[0], [widths[0]]  # channels of h and of every skip the way down leaves
        self.down = nn.ModuleList()
        for i, (width, size) in enumerate(zip(widths, sizes, strict=True)):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(self.block(ch, width))
                ch = width
                self.skip_channels.append(ch)
            last = i == len(widths) - 1
            self.down.append(Level(blocks, size in attention, norm, head_dim, None if last else Downsample(ch, norm)))
            if not last:
                self.skip_channels.append(ch)
        self.middle = nn.ModuleList([self.block(ch, ch), SelfAttention(ch, norm, head_dim), self.block(ch, ch)])
        self.out_channels = ch

    def encode(self, x: Tensor, noise: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor, list[Tensor]]:
        emb = self.embed(noise, y)  # (B, 4·channels)
        h = self.input(x)  # (B, C, H, W) → (B, widths[0], H, W)
        skips = [h]
        for level in self.down:
            for block, attention in zip(level.blocks, level.attentions, strict=True):
                h = attention(block(h, emb))
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)  # (B, c, s, s) → (B, c, ⌈s/2⌉, ⌈s/2⌉)
                skips.append(h)
        first, attention, second = self.middle
        return second(attention(first(h, emb)), emb), emb, skips


class UNet(Encoder):
    """x (B, C, H, W) → (B, C, H, W), conditioned on the noise level (B,) and labels y (B,) or None: the
    :class:`Encoder`, then per level (deepest first) ``num_res_blocks + 1`` residual blocks, each taking one skip
    connection, with attention where the way down had it, and an upsampling to the next skip's size."""

    def __init__(self, shape: Sequence[int], norm: Norm | None = None, activation: Activation = nn.SiLU, **options):
        norm = norm or Norm.named("group")
        super().__init__(shape, norm=norm, activation=activation, **options)
        ch, skips = self.out_channels, list(self.skip_channels)
        self.up = nn.ModuleList()
        for i, (width, size) in reversed(list(enumerate(zip(self.widths, self.sizes, strict=True)))):
            blocks = []
            for _ in range(self.num_res_blocks + 1):
                blocks.append(self.block(ch + skips.pop(), width))
                ch = width
            attend = size in self.attention
            self.up.append(Level(blocks, attend, norm, self.head_dim, Upsample(ch, norm) if i else None))
        self.output = nn.Sequential(
            norm.activation(ch, True), activation(), norm.weight(nn.Conv2d(ch, self.shape[0], 3, padding=1))
        )

    def diffusers_config(self, groups: int) -> dict[str, Any]:
        """The keyword arguments of diffusers' ``UNet2DModel`` with this architecture (and GroupNorm with ``groups``
        groups): the peer that tests and benchmarks compare with."""
        kinds = ["Attn" if size in self.attention else "" for size in self.sizes]
        return {
            "sample_size": self.shape[-1],
            "in_channels": self.shape[0],
            "out_channels": self.shape[0],
            "block_out_channels": tuple(self.widths),
            "layers_per_block": self.num_res_blocks,
            "down_block_types": tuple(f"{kind}DownBlock2D" for kind in kinds),
            "up_block_types": tuple(f"{kind}UpBlock2D" for kind in reversed(kinds)),
            "attention_head_dim": self.head_dim,
            "norm_num_groups": groups,
            "attn_norm_num_groups": groups,  # else its middle attention has no norm under scale_shift
            "resnet_time_scale_shift": "scale_shift",
            "num_class_embeds": self.num_classes + 1 if hasattr(self, "num_classes") else None,
            "dropout": self.dropout,
            "act_fn": "silu",
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        }

    def forward(self, x: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        h, emb, skips = self.encode(x, noise, y)
        for level in self.up:
            for block, attention in zip(level.blocks, level.attentions, strict=True):
                h = attention(block(torch.cat([h, skips.pop()], dim=1), emb))
            if level.resample is not None:
                h = level.resample(h, skips[-1].shape[-2:])  # back to the next skip's size: 4 → 7, 7 → 14
        return self.output(h)  # (B, widths[0], H, W) → (B, C, H, W)
