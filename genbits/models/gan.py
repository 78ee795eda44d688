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
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.nn.norms import ACTIVATION_NORMS, ConditionalBatchNorm, Norm, activation_norm, weight_normed
from genbits.registry import MODELS

Arch = Literal["mlp", "dcgan", "resnet"]
Conditioning = Literal["none", "concat", "throughout"]


def one_hot(y: Tensor | None, num_classes: int | None) -> Tensor | None:
    return None if y is None or not num_classes else F.one_hot(y, num_classes).float()


class NormAct(nn.Module):
    """Activation norm (class-conditional under ``throughout``) then an activation."""

    def __init__(self, norm: str, channels: int, spatial: bool, num_classes: int | None, activation: nn.Module):
        super().__init__()
        conditional = num_classes is not None and norm == "batch"
        self.norm = (
            ConditionalBatchNorm(channels, num_classes) if conditional else activation_norm(norm, channels, spatial)
        )
        self.activation = activation

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.activation(self.norm(x, y) if isinstance(self.norm, ConditionalBatchNorm) else self.norm(x))


class Projection(nn.Module):
    """ψ(h) + ⟨embed(y), h⟩ (the second term only for a conditional critic)."""

    def __init__(self, features: int, num_classes: int | None, norm: str):
        super().__init__()
        self.linear = weight_normed(nn.Linear(features, 1), norm)
        self.embed = weight_normed(nn.Embedding(num_classes, features), norm) if num_classes else None

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        out = self.linear(h).squeeze(-1)
        return out if self.embed is None else out + (self.embed(y) * h).sum(-1)


class Conditioned(nn.Module):
    """Shared plumbing: which labels reach the input (concat) and which reach the layers (throughout)."""

    def __init__(self, num_classes: int | None, conditioning: str):
        super().__init__()
        self.num_classes = num_classes if conditioning != "none" else None
        self.at_input = self.num_classes if conditioning == "concat" else None
        self.in_layers = self.num_classes if conditioning == "throughout" else None

    def check(self, y: Tensor | None) -> None:
        if (y is None) != (self.num_classes is None):
            raise ValueError("a conditional network needs labels y, an unconditional one takes none")


# ------------------------------------------------------------------------------------------------------- MLPs


class MLPGenerator(Conditioned):
    def __init__(self, latent: int, shape: Sequence[int], width: int, depth: int, norm: str, num_classes, conditioning):
        super().__init__(num_classes, conditioning)
        self.shape = tuple(shape)
        sizes = [latent + (self.at_input or 0)] + [width] * depth
        act_norm = norm if norm in ACTIVATION_NORMS else "none"
        self.layers = nn.ModuleList(
            weight_normed(nn.Linear(a, b), norm) for a, b in zip(sizes, sizes[1:], strict=False)
        )
        self.acts = nn.ModuleList(NormAct(act_norm, width, False, self.in_layers, nn.ReLU()) for _ in range(depth))
        self.out = weight_normed(nn.Linear(sizes[-1], int(torch.Size(shape).numel())), norm)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        self.check(y)
        h = z if self.at_input is None else torch.cat([z, one_hot(y, self.at_input)], 1)
        for layer, act in zip(self.layers, self.acts, strict=True):
            h = act(layer(h), y)
        return self.out(h).view(len(z), *self.shape)


class MLPDiscriminator(Conditioned):
    def __init__(self, shape: Sequence[int], width: int, depth: int, norm: str, num_classes, conditioning):
        super().__init__(num_classes, conditioning)
        sizes = [int(torch.Size(shape).numel()) + (self.at_input or 0)] + [width] * depth
        act_norm = norm if norm in ACTIVATION_NORMS else "none"
        self.body = nn.Sequential(
            *[
                module
                for a, b in zip(sizes, sizes[1:], strict=False)
                for module in (
                    weight_normed(nn.Linear(a, b), norm),
                    activation_norm(act_norm, b, False),
                    nn.LeakyReLU(0.2),
                )
            ]
        )
        self.head = Projection(sizes[-1], self.in_layers, norm)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        self.check(y)
        h = x.flatten(1)
        if self.at_input is not None:
            h = torch.cat([h, one_hot(y, self.at_input)], 1)
        return self.head(self.body(h), y)


# ---------------------------------------------------------------------------------------- convolutional nets


def stages_for(size: int) -> int:
    """Resolution doublings from the generator's first map: 28 → 7·2², 14 → 7·2, 8 → 2·2², 32 → 8·2²."""
    if size % 4 == 0 and size >= 8:
        return 2
    if size % 2 == 0:
        return 1
    raise ValueError(f"image size must be even (e.g. 8, 14, 28, 32), got {size}")


def label_maps(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """One-hot labels broadcast as extra image channels (input concatenation for conv critics)."""
    return torch.cat([x, one_hot(y, num_classes)[:, :, None, None].expand(-1, -1, *x.shape[-2:])], 1)


class ConvGenerator(Conditioned):
    """z → linear → (C·2^k, s, s) → k upsampling stages (DCGAN: transposed conv; ResNet: residual blocks with
    nearest upsampling) → 3×3 conv → sigmoid."""

    def __init__(
        self, latent: int, shape: Sequence[int], width: int, norm: str, num_classes, conditioning, residual: bool
    ):
        super().__init__(num_classes, conditioning)
        channels, size = shape[0], shape[-1]
        self.k = stages_for(size)
        self.start, self.first = size // 2**self.k, width * 2**self.k
        act_norm = norm if norm in ACTIVATION_NORMS else "none"
        self.project = weight_normed(nn.Linear(latent + (self.at_input or 0), self.first * self.start**2), norm)
        widths = [self.first // 2**i for i in range(self.k + 1)]
        block = ResidualUp if residual else TransposedUp
        self.input_act = None if residual else NormAct(act_norm, self.first, True, self.in_layers, nn.ReLU())
        self.blocks = nn.ModuleList(
            block(a, b, act_norm, norm, self.in_layers) for a, b in zip(widths, widths[1:], strict=False)
        )
        self.final_act = NormAct(act_norm, widths[-1], True, self.in_layers, nn.ReLU()) if residual else None
        self.out = weight_normed(nn.Conv2d(widths[-1], channels, 3, padding=1), norm)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        self.check(y)
        h = z if self.at_input is None else torch.cat([z, one_hot(y, self.at_input)], 1)
        h = self.project(h).view(len(z), self.first, self.start, self.start)
        if self.input_act is not None:
            h = self.input_act(h, y)
        for block in self.blocks:
            h = block(h, y)
        if self.final_act is not None:
            h = self.final_act(h, y)
        return torch.sigmoid(self.out(h))


class TransposedUp(nn.Module):
    def __init__(self, cin: int, cout: int, act_norm: str, norm: str, num_classes: int | None):
        super().__init__()
        self.conv = weight_normed(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), norm)
        self.act = NormAct(act_norm, cout, True, num_classes, nn.ReLU())

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        return self.act(self.conv(h), y)


class ResidualUp(nn.Module):
    """SNGAN generator block: norm → ReLU → upsample → conv → norm → ReLU → conv, plus upsample → 1×1 conv."""

    def __init__(self, cin: int, cout: int, act_norm: str, norm: str, num_classes: int | None):
        super().__init__()
        self.act1 = NormAct(act_norm, cin, True, num_classes, nn.ReLU())
        self.conv1 = weight_normed(nn.Conv2d(cin, cout, 3, padding=1), norm)
        self.act2 = NormAct(act_norm, cout, True, num_classes, nn.ReLU())
        self.conv2 = weight_normed(nn.Conv2d(cout, cout, 3, padding=1), norm)
        self.skip = weight_normed(nn.Conv2d(cin, cout, 1), norm)

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        up = F.interpolate(self.act1(h, y), scale_factor=2, mode="nearest")
        return self.conv2(self.act2(self.conv1(up), y)) + self.skip(F.interpolate(h, scale_factor=2, mode="nearest"))


class ConvDiscriminator(Conditioned):
    """k downsampling stages to the generator's first resolution (DCGAN: strided 4×4 convs with leaky ReLU;
    ResNet: residual blocks with average pooling), then sum pooling and the (projection) head."""

    def __init__(self, shape: Sequence[int], width: int, norm: str, num_classes, conditioning, residual: bool):
        super().__init__(num_classes, conditioning)
        channels, size = shape[0], shape[-1]
        k = stages_for(size)
        act_norm = norm if norm in ACTIVATION_NORMS else "none"
        widths = [width * 2**i for i in range(k + 1)]
        self.stem = weight_normed(nn.Conv2d(channels + (self.at_input or 0), width, 3, padding=1), norm)
        block = ResidualDown if residual else StridedDown
        self.blocks = nn.Sequential(*(block(a, b, act_norm, norm) for a, b in zip(widths, widths[1:], strict=False)))
        self.final = nn.ReLU() if residual else nn.LeakyReLU(0.2)
        self.head = Projection(widths[-1], self.in_layers, norm)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        self.check(y)
        h = x if self.at_input is None else label_maps(x, y, self.at_input)
        h = self.final(self.blocks(self.stem(h)))
        return self.head(h.sum(dim=(2, 3)), y)


class StridedDown(nn.Sequential):
    def __init__(self, cin: int, cout: int, act_norm: str, norm: str):
        super().__init__(
            nn.LeakyReLU(0.2),
            weight_normed(nn.Conv2d(cin, cout, 4, stride=2, padding=1), norm),
            activation_norm(act_norm, cout, True),
        )


class ResidualDown(nn.Module):
    """SNGAN critic block: ReLU → conv → ReLU → conv → avg-pool, plus 1×1 conv → avg-pool."""

    def __init__(self, cin: int, cout: int, act_norm: str, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            weight_normed(nn.Conv2d(cin, cout, 3, padding=1), norm),
            activation_norm(act_norm, cout, True),
            nn.ReLU(),
            weight_normed(nn.Conv2d(cout, cout, 3, padding=1), norm),
            nn.AvgPool2d(2),
        )
        self.skip = nn.Sequential(weight_normed(nn.Conv2d(cin, cout, 1), norm), nn.AvgPool2d(2))

    def forward(self, h: Tensor) -> Tensor:
        return self.body(h) + self.skip(h)


# ----------------------------------------------------------------------------------------------- the model


class GAN(nn.Module):
    """A generator and a critic as the two players of a game; ``sample`` draws x = G(z) (with labels if
    conditional: given, or uniform over classes)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent: int, num_classes: int | None):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.latent, self.num_classes = latent, num_classes
        self.conditional = num_classes is not None

    def players(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.latent, generator=generator).to(device)

    def sample(self, n: int, c: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        z = self.sample_latent(n, generator)
        if self.conditional and c is None:
            c = torch.randint(0, self.num_classes, (n,), generator=generator).to(z.device)
        return self.generator(z, c if self.conditional else None)


@MODELS.register("gan")
def gan(
    event_shape: Sequence[int],
    num_classes: int | None = None,
    arch: Arch = "mlp",
    latent: int = 32,
    width: int | None = None,
    depth: int = 2,
    g_norm: Norm = "batch",
    d_norm: Norm = "none",
    conditioning: Conditioning = "none",
) -> GAN:
    """A GAN for the dataset's event shape. ``width``: MLP hidden units (default 128) or the conv nets' base channels
    (default 32); ``depth``: MLP hidden layers. Conv archs need images (C, H, W) with H = W even."""
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
    if arch == "mlp":
        width = width or 128
        g = MLPGenerator(latent, shape, width, depth, g_norm, classes, conditioning)
        d = MLPDiscriminator(shape, width, depth, d_norm, classes, conditioning)
    else:
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"arch {arch!r} needs square images (C, H, W); the data have shape {shape}")
        width, residual = width or 32, arch == "resnet"
        g = ConvGenerator(latent, shape, width, g_norm, classes, conditioning, residual)
        d = ConvDiscriminator(shape, width, d_norm, classes, conditioning, residual)
    return GAN(g, d, latent, classes)
