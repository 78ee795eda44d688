"""The cells of NVAE (Vahdat & Kautz 2020, "NVAE: A Deep Hierarchical Variational Autoencoder"), each bit an argument.

- :class:`SqueezeExcitation` (Hu et al. 2018): a per-channel gate computed from the channel means, so a cell can
  re-weight its channels from global context.
- :class:`ResidualCell`: NVAE's encoder cell, BN → act → conv3×3 → BN → act → conv3×3 → SE, added to the input
  with a 0.1 scale (as NVAE's code does) so a deep stack starts close to the identity.
- :class:`GenerativeCell`: NVAE's decoder cell, BN → conv1×1 (expand ×6) → BN → act → depthwise conv5×5 → BN → act →
  conv1×1 → BN → SE: a large receptive field at a small parameter cost; ``depthwise=False`` uses the residual cell's
  two full 3×3 convs instead.

Batch norm takes NVAE's ``momentum`` (0.05; PyTorch's default is 0.1): the running statistics used at evaluation and
sampling follow the fast-moving training statistics closely enough (the paper's "BN momentum" fix).
"""

from __future__ import annotations

from torch import Tensor, nn

from genbits.nn.activations import ActivationName, activation

BN_MOMENTUM = 0.05  # NVAE's value
RESIDUAL_SCALE = 0.1  # NVAE's cells add 0.1·f(x) to x


def batch_norm(channels: int, momentum: float = BN_MOMENTUM) -> nn.BatchNorm2d:
    """2-D batch norm with the running-statistics ``momentum`` as an argument (new = (1 − m)·old + m·batch)."""
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"bn_momentum must be in (0, 1], got {momentum}")
    return nn.BatchNorm2d(channels, momentum=momentum)


class SqueezeExcitation(nn.Module):
    """x · sigmoid(W₂ relu(W₁ mean_hw(x))): one gate in (0, 1) per channel and example. The bottleneck has
    max(channels // 16, 4) units, as in NVAE."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        return x * self.gate(x.mean((2, 3)))[:, :, None, None]


class ResidualCell(nn.Module):
    """x + 0.1 · f(x), f = BN → act → conv3×3 → BN → act → conv3×3 (→ squeeze-and-excitation)."""

    def __init__(
        self,
        channels: int,
        activation_name: ActivationName = "swish",
        bn_momentum: float = BN_MOMENTUM,
        squeeze_excitation: bool = True,
    ):
        super().__init__()
        self.f = nn.Sequential(
            batch_norm(channels, bn_momentum),
            activation(activation_name)(),
            nn.Conv2d(channels, channels, 3, padding=1),
            batch_norm(channels, bn_momentum),
            activation(activation_name)(),
            nn.Conv2d(channels, channels, 3, padding=1),
            SqueezeExcitation(channels) if squeeze_excitation else nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + RESIDUAL_SCALE * self.f(x)


class GenerativeCell(nn.Module):
    """x + 0.1 · f(x) with NVAE's generative f: BN → conv1×1 (×``expansion``) → BN → act → depthwise conv5×5 →
    BN → act → conv1×1 → BN (→ SE). ``depthwise=False``: the residual cell's f (two full 3×3 convs)."""

    def __init__(
        self,
        channels: int,
        activation_name: ActivationName = "swish",
        bn_momentum: float = BN_MOMENTUM,
        squeeze_excitation: bool = True,
        depthwise: bool = True,
        expansion: int = 6,
    ):
        super().__init__()
        if not depthwise:
            self.f = ResidualCell(channels, activation_name, bn_momentum, squeeze_excitation).f
            return
        wide = channels * expansion
        self.f = nn.Sequential(
            batch_norm(channels, bn_momentum),
            nn.Conv2d(channels, wide, 1),
            batch_norm(wide, bn_momentum),
            activation(activation_name)(),
            nn.Conv2d(wide, wide, 5, padding=2, groups=wide),
            batch_norm(wide, bn_momentum),
            activation(activation_name)(),
            nn.Conv2d(wide, channels, 1),
            batch_norm(channels, bn_momentum),
            SqueezeExcitation(channels) if squeeze_excitation else nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + RESIDUAL_SCALE * self.f(x)
