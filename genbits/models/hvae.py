"""A hierarchical VAE in the style of NVAE (Vahdat & Kautz 2020, "NVAE: A Deep Hierarchical Variational
Autoencoder"), whose deep learning bits are constructor arguments with NVAE's values as defaults, so that an
ablation removes one bit by changing one option.

Structure. A bottom-up encoder (residual cells, genbits.nn.nvae) reads the image at ``scales`` resolutions and
keeps one feature map per latent group; a top-down decoder starts from a learned constant and, group by group from
the coarsest scale to the finest, computes the prior p(z_g | z_<g) from its state, the posterior q(z_g | x, z_<g)
from the encoder's feature plus its state, samples z_g and folds it into its state (generative cells between
groups). The image likelihood is a discretized logistic over the data's grey levels.

The bits:
- ``residual_posterior``: q's parameters relative to the prior's, μ_q = μ_p + Δμ, log σ_q = log σ_p + log Δσ, so
  KL(q‖p) = ½(Δμ²/σ_p² + Δσ² − 1) − log Δσ depends on how far the encoder moves q from p, not on where p is.
- ``soft_clamp``: μ and log σ pass through 5·tanh(·/5) (σ = exp(log σ) + 0.01), so no KL or σ explodes.
- ``spectral_regularization``: λ of the loss λ·(Σσ(W) + Σ max|γ|) (genbits.nn.regularization); 0 turns it off.
- ``bn_momentum``, ``activation``, ``squeeze_excitation``, ``depthwise``: the cells (genbits.nn.nvae).
- ``kl_warmup``, ``kl_balancing``: read by the ``nvae`` objective (genbits.objectives.nvae), which also adds the
  regularization: the schedule depends on training progress, which only the objective sees.

Bounds in the flows' convention: the discrete likelihood P(k | z) of the grey levels k is a density
P(k | z)·levels^D on the dequantization bins of [0, 1]^D, so ``elbo`` bounds the same log-density a flow's NLL
measures on uniformly dequantized data.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.data.base import TensorDataset
from genbits.models.base import check_how, refuse_condition, temperature
from genbits.nn.nvae import BN_MOMENTUM, ActivationName, GenerativeCell, ResidualCell, activation
from genbits.nn.regularization import SpectralRegularization
from genbits.registry import MODELS

CLAMP, SIGMA_FLOOR = 5.0, 1e-2  # NVAE's soft clamp 5·tanh(x/5) and σ = exp(log σ) + 0.01


class Normal:
    """A diagonal Gaussian over latent maps (B, L, H, W); log-densities and KLs summed per example → (B,)."""

    def __init__(self, mu: Tensor, sigma: Tensor):
        self.mu, self.sigma = mu, sigma

    @classmethod
    def from_raw(cls, mu: Tensor, log_sigma: Tensor, soft_clamp: bool) -> Normal:
        """NVAE's parametrization of a network's outputs: optional soft clamp, then σ = exp(log σ) + 0.01."""
        if soft_clamp:
            mu, log_sigma = CLAMP * torch.tanh(mu / CLAMP), CLAMP * torch.tanh(log_sigma / CLAMP)
        return cls(mu, log_sigma.exp() + SIGMA_FLOOR)

    def sample(self, generator: torch.Generator | None = None, scale: float = 1.0) -> Tensor:
        """μ + scale·σ·ε (reparameterized); ``scale`` is the sampling temperature."""
        eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + scale * self.sigma * eps

    def log_prob(self, z: Tensor) -> Tensor:
        e = (z - self.mu) / self.sigma
        return (-0.5 * e * e - self.sigma.log() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)

    def kl(self, other: Normal) -> Tensor:
        """KL(self ‖ other) in closed form: log(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²)/(2σ_p²) − ½, summed per example."""
        ratio = self.sigma / other.sigma
        shift = (self.mu - other.mu) / other.sigma
        return (0.5 * (ratio * ratio + shift * shift) - 0.5 - ratio.log()).flatten(1).sum(1)


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int) -> Tensor:
    """log P(k) of grey levels k = x·(levels − 1) under a logistic(mean, e^log_scale) on [−1, 1] discretized into
    ``levels`` bins (the end bins take the tails), per element. Stable form of σ(u) − σ(l), u − l = 2h/s:
    sinh(h/s) / (2 cosh(u/2) cosh(l/2))."""
    centre = 2 * x - 1
    half = 1.0 / (levels - 1)
    inv_scale = torch.exp(-log_scale)
    upper, lower = (centre - mean + half) * inv_scale, (centre - mean - half) * inv_scale
    b = half * inv_scale
    log_sinh = b + torch.log1p(-torch.exp(-2 * b)) - math.log(2)
    inner = log_sinh - math.log(2) - log_cosh(upper / 2) - log_cosh(lower / 2)
    return torch.where(
        centre < -1 + half, F.logsigmoid(upper), torch.where(centre > 1 - half, F.logsigmoid(-lower), inner)
    )


def log_cosh(a: Tensor) -> Tensor:
    return a.abs() + torch.log1p(torch.exp(-2 * a.abs())) - math.log(2)


def halved(size: tuple[int, int]) -> tuple[int, int]:
    """The size after a 3×3 stride-2 conv with padding 1: ceil(n / 2)."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2


class HierarchicalVAE(nn.Module):
    SAMPLING_OPTIONS = ("temperature",)

    def __init__(
        self,
        event_shape: tuple[int, int, int],
        levels: int,
        channels: int = 32,
        latent_channels: int = 4,
        scales: int = 2,
        groups_per_scale: int = 2,
        cells: int = 1,
        preprocess: int = 1,
        residual_posterior: bool = True,
        spectral_regularization: float = 1e-2,
        bn_momentum: float = BN_MOMENTUM,
        activation_name: ActivationName = "swish",
        squeeze_excitation: bool = True,
        depthwise: bool = True,
        kl_warmup: float = 0.3,
        kl_balancing: bool = True,
        soft_clamp: bool = True,
    ):
        super().__init__()
        image_channels, height, width = event_shape
        self.event_shape, self.levels = tuple(event_shape), levels
        self.residual_posterior, self.soft_clamp = residual_posterior, soft_clamp
        self.kl_warmup, self.kl_balancing = kl_warmup, kl_balancing
        self.groups, self.groups_per_scale = scales * groups_per_scale, groups_per_scale
        self.latent_channels = latent_channels
        cell_options = {"activation_name": activation_name, "bn_momentum": bn_momentum}
        cell_options["squeeze_excitation"] = squeeze_excitation

        def encoder_cells() -> nn.Sequential:
            return nn.Sequential(*(ResidualCell(channels, **cell_options) for _ in range(cells)))

        def decoder_cells() -> nn.Sequential:
            return nn.Sequential(*(GenerativeCell(channels, **cell_options, depthwise=depthwise) for _ in range(cells)))

        def head(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(activation(activation_name), nn.Conv2d(inputs, outputs, 3, padding=1))

        # Bottom-up: stem, ``preprocess`` downsamplings, then per scale (fine → coarse) one cell block per group.
        sizes = [(height, width)]
        self.stem = nn.Conv2d(image_channels, channels, 3, padding=1)
        self.preprocess = nn.ModuleList()
        for _ in range(preprocess):
            self.preprocess.append(nn.Sequential(encoder_cells(), nn.Conv2d(channels, channels, 3, 2, 1)))
            sizes.append(halved(sizes[-1]))
        scale_sizes = [sizes[-1]]
        for _ in range(scales - 1):
            scale_sizes.append(halved(scale_sizes[-1]))
        self.encoder = nn.ModuleList(encoder_cells() for _ in range(self.groups))
        self.downsample = nn.ModuleList(nn.Conv2d(channels, channels, 3, 2, 1) for _ in range(scales - 1))

        # Top-down, coarse → fine: group g lives at scale_sizes[scale_of[g]].
        self.scale_of = [scales - 1 - g // groups_per_scale for g in range(self.groups)]
        self.group_sizes = [scale_sizes[s] for s in self.scale_of]
        self.top = nn.Parameter(0.1 * torch.randn(channels, *scale_sizes[-1]))
        self.decoder = nn.ModuleList(decoder_cells() for _ in range(self.groups - 1))  # before groups 1..G−1
        self.upsample = nn.ModuleDict(
            {
                str(g): nn.Sequential(
                    nn.Upsample(size=self.group_sizes[g]), nn.Conv2d(channels, channels, 3, padding=1)
                )
                for g in range(1, self.groups)
                if self.scale_of[g] != self.scale_of[g - 1]
            }
        )
        self.prior = nn.ModuleList(head(channels, 2 * latent_channels) for _ in range(self.groups - 1))  # groups 1..
        self.merge_encoder = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(self.groups))
        self.posterior = nn.ModuleList(head(channels, 2 * latent_channels) for _ in range(self.groups))
        self.merge_latent = nn.ModuleList(
            nn.Conv2d(channels + latent_channels, channels, 1) for _ in range(self.groups)
        )

        # Back up to the image: undo the preprocessing, then the logistic's mean and log-scale per pixel.
        self.postprocess = nn.ModuleList(
            nn.Sequential(nn.Upsample(size=size), nn.Conv2d(channels, channels, 3, padding=1), decoder_cells())
            for size in reversed(sizes[:-1])
        )
        self.output = head(channels, 2 * image_channels)
        self.spectral = SpectralRegularization(self, spectral_regularization) if spectral_regularization > 0 else None

    # ------------------------------------------------------------------------------------------------
    # Pieces.

    def kl_alpha(self) -> Tensor:
        """NVAE's KL-balancing prior weights per group: ∝ the group's area (the "square" rule), 1 at the top."""
        return torch.tensor([4.0 ** (self.scale_of[0] - s) for s in self.scale_of])

    def bottom_up(self, x: Tensor) -> list[Tensor]:
        """The encoder's feature for each group, in top-down order (coarse → fine)."""
        h = self.stem(2 * x - 1)
        for block in self.preprocess:
            h = block(h)
        features = []
        for b, cells in enumerate(self.encoder):  # bottom-up order: fine → coarse
            h = cells(h)
            features.append(h)
            if (b + 1) % self.groups_per_scale == 0 and b + 1 < self.groups:
                h = self.downsample[b // self.groups_per_scale](h)
        return features[::-1]

    def prior_of(self, g: int, state: Tensor) -> tuple[Normal, Tensor, Tensor]:
        """p(z_g | z_<g) and its raw (μ, log σ): raw zeros for the top group (N(0, I) up to NVAE's σ floor, as in
        NVAE's code, so a residual posterior that adds nothing equals it), else from the decoder's state."""
        if g == 0:
            mu = log_sigma = state.new_zeros(len(state), self.latent_channels, *self.group_sizes[0])
        else:
            mu, log_sigma = self.prior[g - 1](state).chunk(2, dim=1)
        return Normal.from_raw(mu, log_sigma, self.soft_clamp), mu, log_sigma

    def posterior_of(self, g: int, state: Tensor, feature: Tensor, prior_mu: Tensor, prior_log_sigma: Tensor) -> Normal:
        """q(z_g | x, z_<g) from the encoder's feature plus the decoder's state; residual: relative to the prior's
        raw parameters (μ_p + Δμ, log σ_p + log Δσ), else absolute."""
        delta_mu, delta_log_sigma = self.posterior[g](feature + self.merge_encoder[g](state)).chunk(2, dim=1)
        if self.residual_posterior:
            return Normal.from_raw(prior_mu + delta_mu, prior_log_sigma + delta_log_sigma, self.soft_clamp)
        return Normal.from_raw(delta_mu, delta_log_sigma, self.soft_clamp)

    def step_down(self, g: int, state: Tensor) -> Tensor:
        """The decoder's state before group g: generative cells (and an upsampling where the scale changes)."""
        if g == 0:
            return state
        state = self.decoder[g - 1](state)
        return self.upsample[str(g)](state) if str(g) in self.upsample else state

    def absorb(self, g: int, state: Tensor, z: Tensor) -> Tensor:
        return self.merge_latent[g](torch.cat([state, z], dim=1))

    def decode(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """The logistic's mean and log-scale per pixel, each (B, C, H, W)."""
        for block in self.postprocess:
            state = block(state)
        return self.output(state).chunk(2, dim=1)

    # ------------------------------------------------------------------------------------------------
    # The bound.

    def elbo_terms(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """``reconstruction`` E_q log p(x | z) (one sample, nats, flows' density convention) and ``kl/<g>``
        KL(q(z_g | x, z_<g) ‖ p(z_g | z_<g)) per group g (0 = top), each (B,)."""
        refuse_condition("hvae", y)
        features = self.bottom_up(x)
        state = self.top.expand(len(x), *self.top.shape)
        terms = {}
        for g, feature in enumerate(features):
            state = self.step_down(g, state)
            prior, prior_mu, prior_log_sigma = self.prior_of(g, state)
            posterior = self.posterior_of(g, state, feature, prior_mu, prior_log_sigma)
            z = posterior.sample()
            terms[f"kl/{g}"] = posterior.kl(prior)
            state = self.absorb(g, state, z)
        mean, log_scale = self.decode(state)
        log_p = discretized_logistic_log_prob(x, mean, log_scale, self.levels).flatten(1).sum(1)
        dims = x[0].numel()
        return {"reconstruction": log_p + dims * math.log(self.levels), **terms}

    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The ELBO per example (B,), nats: reconstruction − Σ_g KL_g."""
        terms = self.elbo_terms(x, y)
        return terms.pop("reconstruction") - sum(terms.values())

    def regularization(self) -> Tensor:
        """The loss the objective adds to −ELBO: spectral regularization, or 0 when it is off."""
        return self.spectral() if self.spectral is not None else self.top.new_zeros(())

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """Ancestral samples (n, C, H, W) on the data's grey levels; ``temperature`` T scales every prior's σ."""
        refuse_condition("hvae", y)
        check_how("hvae", how, self.SAMPLING_OPTIONS)
        t = temperature(how)
        state = self.top.expand(n, *self.top.shape)
        for g in range(self.groups):
            state = self.step_down(g, state)
            z = self.prior_of(g, state)[0].sample(generator, t)
            state = self.absorb(g, state, z)
        mean, log_scale = self.decode(state)
        u = torch.rand(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype).clamp(1e-5, 1 - 1e-5)
        x = (mean + log_scale.exp() * (u.log() - (-u).log1p())).clamp(-1, 1)
        return ((x + 1) / 2 * (self.levels - 1)).round() / (self.levels - 1)


@MODELS.register("hvae")
def hvae(
    event_shape: tuple[int, ...],
    dataset: TensorDataset,
    channels: int = 32,
    latent_channels: int = 4,
    scales: int = 2,
    groups_per_scale: int = 2,
    cells: int = 1,
    preprocess: int = 1,
    residual_posterior: bool = True,
    spectral_regularization: float = 1e-2,
    bn_momentum: float = BN_MOMENTUM,
    activation: ActivationName = "swish",
    squeeze_excitation: bool = True,
    depthwise: bool = True,
    kl_warmup: float = 0.3,
    kl_balancing: bool = True,
    soft_clamp: bool = True,
) -> HierarchicalVAE:
    """NVAE-style hierarchical VAE on images with ``levels`` grey levels; every bit is an option with NVAE's value.
    ``spectral_regularization``: λ (0 turns it off); ``kl_warmup``: the fraction of training over which the KL
    weight rises from 1e-4 to 1 (0: none)."""
    if len(event_shape) != 3 or getattr(dataset, "levels", None) is None:
        raise ValueError(f"hvae models images with grey levels (C, H, W); this dataset has event shape {event_shape}")
    for name, value in (("channels", channels), ("latent_channels", latent_channels), ("scales", scales)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if groups_per_scale < 1 or cells < 1 or preprocess < 0:
        raise ValueError("need groups_per_scale >= 1, cells >= 1 and preprocess >= 0")
    if spectral_regularization < 0 or not 0 <= kl_warmup <= 1:
        raise ValueError("need spectral_regularization >= 0 and kl_warmup in [0, 1]")
    return HierarchicalVAE(
        event_shape,
        dataset.levels,
        channels,
        latent_channels,
        scales,
        groups_per_scale,
        cells,
        preprocess,
        residual_posterior,
        spectral_regularization,
        bn_momentum,
        activation,
        squeeze_excitation,
        depthwise,
        kl_warmup,
        kl_balancing,
        soft_clamp,
    )
