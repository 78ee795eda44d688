"""Implicit generators and their critics: MLP (2-D data), DCGAN-style and ResNet (SNGAN-style) for small images.

The deep learning bits are arguments: ``g_norm`` / ``d_norm`` pick none, batch, layer, group, spectral (power
iteration) or spectral-svd (exact) per network, and ``conditioning`` decides where class labels enter:

- ``concat``: only at the input (one-hot appended to z; one-hot label maps appended to the image for D);
- ``throughout``: in every generator layer (class-conditional batch norm) and in the critic's output
  (projection discriminator, Miyato & Koyama 2018: D(x, y) = ψ(h) + ⟨embed(y), h⟩).

Generators end in a sigmoid for images (data live in [0, 1]) and are linear for 2-D data. Critics return raw
scores (B,); the objective decides what they mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.models.base import check_how, num_classes_of, refuse_condition, temperature
from genbits.nn.norms import ConditionalBatchNorm, Norm, NormName
from genbits.registry import MODELS

Arch = Literal["mlp", "dcgan", "resnet"]
Conditioning = Literal["none", "concat", "throughout"]


def one_hot(y: Tensor | None, num_classes: int | None) -> Tensor | None:
    return None if y is None or not num_classes else F.one_hot(y, num_classes).float()


class NormAct(nn.Module):
    """The norm's activation module (class-conditional batch norm takes the labels) then an activation."""

    def __init__(self, norm: Norm, channels: int, spatial: bool, activation: nn.Module):
        super().__init__()
        self.norm = norm.activation(channels, spatial)
        self.activation = activation

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.activation(self.norm(x, y) if isinstance(self.norm, ConditionalBatchNorm) else self.norm(x))


class Projection(nn.Module):
    """ψ(h) + ⟨embed(y), h⟩ (the second term only for a conditional critic): (B, F) → (B,)."""

    def __init__(self, features: int, num_classes: int | None, norm: Norm):
        super().__init__()
        self.linear = norm.weight(nn.Linear(features, 1))
        self.embed = norm.weight(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        out = self.linear(h).squeeze(-1)  # (B, F) → (B,)
        return out if self.embed is None else out + (self.embed(y) * h).sum(-1)


class Conditioned(nn.Module):
    """Shared plumbing: which labels reach the input (concat) and which reach the layers (throughout)."""

    def __init__(self, num_classes: int | None, conditioning: Conditioning):
        super().__init__()
        self.num_classes = num_classes if conditioning != "none" else None
        self.at_input = self.num_classes if conditioning == "concat" else None
        self.in_layers = self.num_classes if conditioning == "throughout" else None

    def check(self, y: Tensor | None) -> None:
        if (y is None) != (self.num_classes is None):
            raise ValueError("a conditional network needs labels y, an unconditional one takes none")


# ------------------------------------------------------------------------------------------------------- MLPs


class MLPGenerator(Conditioned):
    """z (B, latent) → ``depth`` × (linear → norm → ReLU) → linear → x (B, *shape)."""

    def __init__(
        self,
        latent: int,
        shape: Sequence[int],
        width: int,
        depth: int,
        norm: Norm,
        num_classes: int | None,
        conditioning: Conditioning,
    ):
        super().__init__(num_classes, conditioning)
        self.shape = tuple(shape)
        sizes = [latent + (self.at_input or 0)] + [width] * depth
        self.layers = nn.ModuleList(norm.weight(nn.Linear(a, b)) for a, b in zip(sizes, sizes[1:], strict=False))
        self.acts = nn.ModuleList(NormAct(norm, width, False, nn.ReLU()) for _ in range(depth))
        self.out = norm.weight(nn.Linear(sizes[-1], int(torch.Size(shape).numel())))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        self.check(y)
        h = z if self.at_input is None else torch.cat([z, one_hot(y, self.at_input)], 1)  # (B, latent + K)
        for layer, act in zip(self.layers, self.acts, strict=True):
            h = act(layer(h), y)  # (B, width)
        return self.out(h).view(len(z), *self.shape)  # (B, D) → (B, *shape)


class MLPDiscriminator(Conditioned):
    """x (B, *shape) flattened → ``depth`` × (linear → norm → leaky ReLU) → (projection) head → scores (B,)."""

    def __init__(
        self,
        shape: Sequence[int],
        width: int,
        depth: int,
        norm: Norm,
        num_classes: int | None,
        conditioning: Conditioning,
    ):
        super().__init__(num_classes, conditioning)
        sizes = [int(torch.Size(shape).numel()) + (self.at_input or 0)] + [width] * depth
        self.body = nn.Sequential(
            *[
                module
                for a, b in zip(sizes, sizes[1:], strict=False)
                for module in (norm.weight(nn.Linear(a, b)), norm.activation(b, False), nn.LeakyReLU(0.2))
            ]
        )
        self.head = Projection(sizes[-1], self.in_layers, norm)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The representation the head scores, (B, width): what an MMD critic compares."""
        self.check(y)
        h = x.flatten(1)  # (B, *shape) → (B, D)
        if self.at_input is not None:
            h = torch.cat([h, one_hot(y, self.at_input)], 1)  # (B, D + K)
        return self.body(h)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.features(x, y), y)  # (B, width) → (B,)


# ---------------------------------------------------------------------------------------- convolutional nets


def stages_for(size: int) -> int:
    """Resolution doublings from the generator's first map: 28 → 7·2², 14 → 7·2, 8 → 2·2², 32 → 8·2²."""
    if size % 4 == 0 and size >= 8:
        return 2
    if size % 2 == 0:
        return 1
    raise ValueError(f"image size must be even (e.g. 8, 14, 28, 32), got {size}")


def label_maps(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """One-hot labels broadcast as extra image channels (input concatenation for conv critics):
    (B, C, H, W) → (B, C + K, H, W)."""
    return torch.cat([x, one_hot(y, num_classes)[:, :, None, None].expand(-1, -1, *x.shape[-2:])], 1)


class ConvGenerator(Conditioned):
    """z → linear → (C·2^k, s, s) → k upsampling stages (DCGAN: transposed conv; ResNet: residual blocks with
    nearest upsampling) → 3×3 conv → sigmoid."""

    def __init__(
        self,
        latent: int,
        shape: Sequence[int],
        width: int,
        norm: Norm,
        num_classes: int | None,
        conditioning: Conditioning,
        residual: bool,
    ):
        super().__init__(num_classes, conditioning)
        channels, size = shape[0], shape[-1]
        self.k = stages_for(size)
        self.start, self.first = size // 2**self.k, width * 2**self.k
        self.project = norm.weight(nn.Linear(latent + (self.at_input or 0), self.first * self.start**2))
        widths = [self.first // 2**i for i in range(self.k + 1)]
        block = ResidualUp if residual else TransposedUp
        self.input_act = None if residual else NormAct(norm, self.first, True, nn.ReLU())
        self.blocks = nn.ModuleList(block(a, b, norm) for a, b in zip(widths, widths[1:], strict=False))
        self.final_act = NormAct(norm, widths[-1], True, nn.ReLU()) if residual else None
        self.out = norm.weight(nn.Conv2d(widths[-1], channels, 3, padding=1))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        self.check(y)
        h = z if self.at_input is None else torch.cat([z, one_hot(y, self.at_input)], 1)  # (B, latent + K)
        h = self.project(h).view(len(z), self.first, self.start, self.start)  # → (B, C·2^k, s, s)
        if self.input_act is not None:
            h = self.input_act(h, y)
        for block in self.blocks:
            h = block(h, y)  # (B, C', H, W) → (B, C'/2, 2H, 2W)
        if self.final_act is not None:
            h = self.final_act(h, y)
        return torch.sigmoid(self.out(h))  # (B, C, s·2^k, s·2^k) → (B, channels, size, size)


class TransposedUp(nn.Module):
    """DCGAN generator stage: 4×4 transposed conv, stride 2 → norm → ReLU: (B, cin, H, W) → (B, cout, 2H, 2W)."""

    def __init__(self, cin: int, cout: int, norm: Norm):
        super().__init__()
        self.conv = norm.weight(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
        self.act = NormAct(norm, cout, True, nn.ReLU())

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        return self.act(self.conv(h), y)  # (B, cin, H, W) → (B, cout, 2H, 2W)


class ResidualUp(nn.Module):
    """SNGAN generator block: norm → ReLU → upsample → conv → norm → ReLU → conv, plus upsample → 1×1 conv:
    (B, cin, H, W) → (B, cout, 2H, 2W)."""

    def __init__(self, cin: int, cout: int, norm: Norm):
        super().__init__()
        self.act1 = NormAct(norm, cin, True, nn.ReLU())
        self.conv1 = norm.weight(nn.Conv2d(cin, cout, 3, padding=1))
        self.act2 = NormAct(norm, cout, True, nn.ReLU())
        self.conv2 = norm.weight(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = norm.weight(nn.Conv2d(cin, cout, 1))

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        up = F.interpolate(self.act1(h, y), scale_factor=2, mode="nearest")  # (B, cin, H, W) → (B, cin, 2H, 2W)
        return self.conv2(self.act2(self.conv1(up), y)) + self.skip(F.interpolate(h, scale_factor=2, mode="nearest"))


class ConvDiscriminator(Conditioned):
    """k downsampling stages to the generator's first resolution (DCGAN: strided 4×4 convs with leaky ReLU;
    ResNet: residual blocks with average pooling), then sum pooling and the (projection) head."""

    def __init__(
        self,
        shape: Sequence[int],
        width: int,
        norm: Norm,
        num_classes: int | None,
        conditioning: Conditioning,
        residual: bool,
    ):
        super().__init__(num_classes, conditioning)
        channels, size = shape[0], shape[-1]
        k = stages_for(size)
        widths = [width * 2**i for i in range(k + 1)]
        self.stem = norm.weight(nn.Conv2d(channels + (self.at_input or 0), width, 3, padding=1))
        block = ResidualDown if residual else StridedDown
        self.blocks = nn.Sequential(*(block(a, b, norm) for a, b in zip(widths, widths[1:], strict=False)))
        self.final = nn.ReLU() if residual else nn.LeakyReLU(0.2)
        self.head = Projection(widths[-1], self.in_layers, norm)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The sum-pooled representation the head scores, (B, width·2^k): what an MMD critic compares."""
        self.check(y)
        h = x if self.at_input is None else label_maps(x, y, self.at_input)  # (B, C [+ K], H, W)
        h = self.final(self.blocks(self.stem(h)))  # → (B, width, H, W) → (B, width·2^k, H/2^k, W/2^k)
        return h.sum(dim=(2, 3))  # sum pooling

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.features(x, y), y)  # (B, width·2^k) → (B,)


class StridedDown(nn.Sequential):
    """DCGAN critic stage: leaky ReLU → 4×4 conv, stride 2 → norm: (B, cin, H, W) → (B, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int, norm: Norm):
        super().__init__(
            nn.LeakyReLU(0.2),
            norm.weight(nn.Conv2d(cin, cout, 4, stride=2, padding=1)),
            norm.activation(cout, True),
        )


class ResidualDown(nn.Module):
    """SNGAN critic block: ReLU → conv → ReLU → conv → avg-pool, plus 1×1 conv → avg-pool:
    (B, cin, H, W) → (B, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int, norm: Norm):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            norm.weight(nn.Conv2d(cin, cout, 3, padding=1)),
            norm.activation(cout, True),
            nn.ReLU(),
            norm.weight(nn.Conv2d(cout, cout, 3, padding=1)),
            nn.AvgPool2d(2),
        )
        self.skip = nn.Sequential(norm.weight(nn.Conv2d(cin, cout, 1)), nn.AvgPool2d(2))

    def forward(self, h: Tensor) -> Tensor:
        return self.body(h) + self.skip(h)


# ----------------------------------------------------------------------------------------------- the model


class GAN(nn.Module):
    """A generator and a critic as the two players of a game. A conditional GAN has ``num_classes``; an
    unconditional one has no such attribute (the ``Conditional`` contract)."""

    SAMPLING_OPTIONS: tuple[str, ...] = ("temperature",)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent: int, num_classes: int | None):
        super().__init__()
        self.generator, self.discriminator, self.latent = generator, discriminator, latent
        if num_classes is not None:
            self.num_classes = num_classes

    def players(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), shape (n, latent), drawn on the CPU (so a seeded generator gives the same z anywhere)."""
        device = next(self.parameters()).device
        return torch.randn(n, self.latent, generator=generator).to(device)

    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """x = G(z) for z ~ N(0, T²I), shape (n, *event_shape). ``temperature`` T (default 1) below 1 trades variety
        for typical samples, BigGAN's truncation trick done by scaling. A conditional GAN draws uniform labels
        when ``y`` is None (after z, from the same generator); an unconditional one refuses labels."""
        check_how("gan", how, self.SAMPLING_OPTIONS)
        scale = temperature(how)
        classes = num_classes_of(self)
        if classes is None:
            refuse_condition("gan", y)
        z = scale * self.sample_latent(n, generator)
        if classes is not None and y is None:
            y = torch.randint(0, classes, (n,), generator=generator).to(z.device)
        return self.generator(z, y)


@MODELS.register("gan")
def gan(
    event_shape: Sequence[int],
    num_classes: int | None = None,
    arch: Arch = "mlp",
    latent: int = 32,
    width: int | None = None,
    depth: int = 2,
    g_norm: NormName = "batch",
    d_norm: NormName = "none",
    conditioning: Conditioning = "none",
) -> GAN:
    """A GAN for the dataset's event shape. ``width``: MLP hidden units (default 128) or the conv nets' base channels
    (default 32); ``depth``: MLP hidden layers. Conv archs need images (C, H, W) with H = W even. The norm names
    are resolved here, once, into the builders the networks call."""
    shape = tuple(event_shape)
    if conditioning != "none" and not num_classes:
        raise ValueError(f"conditioning: {conditioning!r} needs a labelled dataset; this one has no classes")
    if conditioning == "throughout" and g_norm != "batch":
        raise ValueError(
            f"conditioning 'throughout' conditions the generator through its batch norms: "
            f"g_norm must be 'batch', not {g_norm!r}"
        )
    if latent < 1 or depth < 1 or (width is not None and width < 1):
        raise ValueError("latent, depth and width must be >= 1")
    classes = num_classes if conditioning != "none" else None
    g_norms = Norm.named(g_norm, classes if conditioning == "throughout" else None)  # cBN: labels in every layer
    d_norms = Norm.named(d_norm)
    if arch == "mlp":
        width = width or 128
        g = MLPGenerator(latent, shape, width, depth, g_norms, classes, conditioning)
        d = MLPDiscriminator(shape, width, depth, d_norms, classes, conditioning)
    else:
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"arch {arch!r} needs square images (C, H, W); the data have shape {shape}")
        width, residual = width or 32, arch == "resnet"
        g = ConvGenerator(latent, shape, width, g_norms, classes, conditioning, residual)
        d = ConvDiscriminator(shape, width, d_norms, classes, conditioning, residual)
    return GAN(g, d, latent, classes)
