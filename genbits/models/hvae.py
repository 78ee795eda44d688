"""A hierarchical VAE in the style of NVAE (Vahdat & Kautz 2020, "NVAE: A Deep Hierarchical Variational
Autoencoder"), whose deep learning bits are constructor arguments with NVAE's values as defaults, so that an
ablation removes one bit by changing one option.

Structure. A bottom-up encoder (residual cells, genbits.nn.nvae) reads the image at ``scales`` resolutions and
keeps one feature map per latent group; a top-down decoder starts from a learned constant and, group by group from
the coarsest scale to the finest, computes the prior p(z_g | z_<g) from its state, the posterior q(z_g | x, z_<g)
from the encoder's feature plus its state, samples z_g and folds it into its state (generative cells between
groups). The image likelihood is one of genbits.nn.likelihoods (NVAE's discretized logistic mixture by default).

The bits:
- ``residual_posterior``: q's parameters relative to the prior's, μ_q = μ_p + Δμ, log σ_q = log σ_p + log Δσ, so
  KL(q‖p) = ½(Δμ²/σ_p² + Δσ² − 1) − log Δσ depends on how far the encoder moves q from p, not on where p is.
- ``soft_clamp``: μ and log σ pass through 5·tanh(·/5) (σ = exp(log σ) + 0.01), so no KL or σ explodes.
- ``spectral_regularization``: λ of the loss λ·(Σσ(W) + Σ max|γ|) (genbits.nn.regularization); 0 turns it off.
- ``bn_momentum``, ``activation``, ``squeeze_excitation``, ``depthwise``: the cells (genbits.nn.nvae).
- KL warm-up and KL balancing depend on training progress, so they are options of the ``elbo`` objective
  (genbits.objectives.elbo: ``warmup``, ``warmup_floor``, ``kl_balancing``), which also adds ``regularization()``;
  the presets set NVAE's values. The KL comes per latent unit, so balancing weighs each group by its size, as
  NVAE's area-proportional α does.

The model offers its bound in parts (``elbo_parts``, genbits.models.latent) and importance weights
(``log_weights``), so ``genbits eval --metrics nll,iwae,kl`` apply as for the VAE, in the likelihood's convention.
Both draw their posterior noise from the batch's per-example ``noise`` in training (group g is draw g), as the VAE.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from genbits.models.base import check_how, refuse_condition, temperature
from genbits.models.latent import ElboParts, diagonal_normal_log_prob, kl_diagonal_normals
from genbits.models.latent import soft_clamp as tanh_clamp  # here soft_clamp names the switch
from genbits.nn.activations import ActivationName, activation
from genbits.nn.likelihoods import LIKELIHOODS, build_likelihood
from genbits.nn.nvae import BN_MOMENTUM, GenerativeCell, ResidualCell
from genbits.nn.regularization import SpectralRegularization
from genbits.registry import MODELS
from genbits.train.stream import ExampleNoise

CLAMP, SIGMA_FLOOR = 5.0, 1e-2  # NVAE's soft clamp 5·tanh(x/5) and σ = exp(log σ) + 0.01


class Normal:
    """A diagonal Gaussian over latent maps (B, L, H, W); log-densities and KLs summed per example → (B,)."""

    def __init__(self, mu: Tensor, sigma: Tensor):
        self.mu, self.sigma = mu, sigma

    @classmethod
    def from_raw(cls, mu: Tensor, log_sigma: Tensor, soft_clamp: bool) -> Normal:
        """NVAE's parametrization of a network's outputs: optional soft clamp, then σ = exp(log σ) + 0.01."""
        if soft_clamp:
            mu, log_sigma = tanh_clamp(mu, CLAMP), tanh_clamp(log_sigma, CLAMP)
        return cls(mu, log_sigma.exp() + SIGMA_FLOOR)

    def sample(self, generator: torch.Generator | None = None, scale: float = 1.0, eps: Tensor | None = None) -> Tensor:
        """μ + scale·σ·ε (reparameterized); ``scale`` is the sampling temperature, ``eps`` given noise (else drawn)."""
        if eps is None:
            eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + scale * self.sigma * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; μ, σ²) summed per example, (B,)."""
        return diagonal_normal_log_prob(z, self.mu, self.sigma.log()).flatten(1).sum(1)

    def kl(self, other: Normal) -> Tensor:
        """KL(self ‖ other) per latent unit, (B, units), in closed form:
        log(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²)/(2σ_p²) − ½."""
        return kl_diagonal_normals(self.mu, self.sigma.log(), other.mu, other.sigma.log()).flatten(1)


def group_noise(noise: ExampleNoise, g: int, like: Tensor, copies: int) -> Tensor:
    """Group g's base noise shaped as ``like`` (copies·B, L, H, W), copy-major as ``Tensor.repeat`` stacks x."""
    eps = noise.normal((copies, *like.shape[1:]), draw=g, device=like.device, dtype=like.dtype)  # (B, copies, ...)
    return eps.transpose(0, 1).reshape(like.shape)


def halved(size: tuple[int, int]) -> tuple[int, int]:
    """The size after a 3×3 stride-2 conv with padding 1: ceil(n / 2)."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2


class HierarchicalVAE(nn.Module):
    SAMPLING_OPTIONS = ("temperature",)

    def __init__(
        self,
        event_shape: tuple[int, int, int],
        likelihood: nn.Module,
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
        soft_clamp: bool = True,
    ):
        super().__init__()
        image_channels, height, width = event_shape
        self.event_shape, self.likelihood = tuple(event_shape), likelihood
        self.residual_posterior, self.soft_clamp = residual_posterior, soft_clamp
        self.groups, self.groups_per_scale = scales * groups_per_scale, groups_per_scale
        self.latent_channels = latent_channels
        cell_options = {"activation_name": activation_name, "bn_momentum": bn_momentum}
        cell_options["squeeze_excitation"] = squeeze_excitation

        def encoder_cells() -> nn.Sequential:
            return nn.Sequential(*(ResidualCell(channels, **cell_options) for _ in range(cells)))

        def decoder_cells() -> nn.Sequential:
            return nn.Sequential(*(GenerativeCell(channels, **cell_options, depthwise=depthwise) for _ in range(cells)))

        def head(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(activation(activation_name)(), nn.Conv2d(inputs, outputs, 3, padding=1))

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

        # Back up to the image: undo the preprocessing, then the likelihood's parameters per pixel.
        self.postprocess = nn.ModuleList(
            nn.Sequential(nn.Upsample(size=size), nn.Conv2d(channels, channels, 3, padding=1), decoder_cells())
            for size in reversed(sizes[:-1])
        )
        self.output = head(channels, likelihood.num_params * image_channels)
        self.spectral = SpectralRegularization(self, spectral_regularization) if spectral_regularization > 0 else None

    # ------------------------------------------------------------------------------------------------
    # Pieces.

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

    def likelihood_params(self, state: Tensor) -> Tensor:
        """The likelihood's parameters, (B, P, C, H, W)."""
        for block in self.postprocess:
            state = block(state)
        params = self.output(state)
        return params.view(len(params), self.likelihood.num_params, *self.event_shape)

    # ------------------------------------------------------------------------------------------------
    # Bounds.

    def top_down(
        self, x: Tensor, noise: ExampleNoise | None = None, copies: int = 1
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """One posterior draw z ~ q(z | x): log p(x | z) (B,), the closed-form KL of each group g (top first) per
        latent unit (B, units), and log p(z) − log q(z) at the draw (B,). ``x`` may hold ``copies`` stacked copies
        of the batch that ``noise`` describes (k importance draws)."""
        features = self.bottom_up(x)
        state = self.top.expand(len(x), *self.top.shape)
        kl, log_ratio = {}, x.new_zeros(len(x))
        for g, feature in enumerate(features):
            state = self.step_down(g, state)
            prior, prior_mu, prior_log_sigma = self.prior_of(g, state)
            posterior = self.posterior_of(g, state, feature, prior_mu, prior_log_sigma)
            z = posterior.sample(eps=None if noise is None else group_noise(noise, g, posterior.mu, copies))
            kl[str(g)] = posterior.kl(prior)
            log_ratio = log_ratio + prior.log_prob(z) - posterior.log_prob(z)
            state = self.absorb(g, state, z)
        return self.likelihood.log_prob(self.likelihood_params(state), x), kl, log_ratio

    def elbo_parts(self, x: Tensor, y: Tensor | None = None, noise: ExampleNoise | None = None) -> ElboParts:
        """E_q log p(x | z) (one draw) and the KL of every group per latent unit: what the ``elbo`` objective uses."""
        refuse_condition("hvae", y)
        reconstruction, kl, _ = self.top_down(x, noise)
        return ElboParts(reconstruction, kl)

    def elbo_terms(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """``reconstruction`` and ``kl/<g>`` per group (0 = top), each (B,), nats."""
        return self.elbo_parts(x, y).terms()

    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The ELBO per example (B,), nats: reconstruction − Σ_g KL_g."""
        return self.elbo_parts(x, y).elbo()

    def log_weights(self, x: Tensor, y: Tensor | None = None, k: int = 1, noise: ExampleNoise | None = None) -> Tensor:
        """log w_i = log p(x, z_i) − log q(z_i | x) for k posterior draws per example, (k, B): the IWAE bound and
        the importance-sampled NLL."""
        refuse_condition("hvae", y)
        log_p, _, log_ratio = self.top_down(x.repeat(k, *(1,) * (x.dim() - 1)), noise, k)
        return (log_p + log_ratio).view(k, len(x))

    def regularization(self) -> Tensor:
        """The penalty the objective adds to the loss: spectral regularization, or 0 when it is off."""
        return self.spectral() if self.spectral is not None else self.top.new_zeros(())

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """Ancestral samples (n, C, H, W) in the data's convention; ``temperature`` T scales every prior's σ."""
        refuse_condition("hvae", y)
        check_how("hvae", how, self.SAMPLING_OPTIONS)
        state = self.descend(self.top.expand(n, *self.top.shape), None, generator, temperature(how))
        return self.likelihood.sample(self.likelihood_params(state), generator)

    def descend(
        self, state: Tensor, top: Tensor | None, generator: torch.Generator | None = None, scale: float = 1.0
    ) -> Tensor:
        """The decoder's ancestral pass: each group z_g ~ p(z_g | z_<g) (σ scaled by ``scale``; the top group's
        draw is ``top`` when given) folded into ``state``; returns the final state."""
        for g in range(self.groups):
            state = self.step_down(g, state)
            z = top if g == 0 and top is not None else self.prior_of(g, state)[0].sample(generator, scale)
            state = self.absorb(g, state, z)
        return state

    # ------------------------------------------------------------------------------------------------
    # The top group alone: where a 2-D top latent (2 channels at 1×1) can be drawn and its holes measured.

    def top_prior(self, n: int) -> Normal:
        """p(z_0), (n, L, H, W) parameters: the top group's prior (N(0, I) up to the σ floor)."""
        return self.prior_of(0, self.top.expand(n, *self.top.shape))[0]

    def top_posterior(self, x: Tensor) -> Normal:
        """q(z_0 | x): the top group's posterior depends on x alone (the decoder's state there is a constant)."""
        state = self.top.expand(len(x), *self.top.shape)
        _, mu, log_sigma = self.prior_of(0, state)
        return self.posterior_of(0, state, self.bottom_up(x)[0], mu, log_sigma)

    @torch.no_grad()
    def decode_top(self, top: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """E[x | z]: the top group given (B, L, H, W), the lower groups drawn from their priors."""
        state = self.descend(self.top.expand(len(top), *self.top.shape), top, generator)
        return self.likelihood.mean(self.likelihood_params(state))


@MODELS.register("hvae")
def hvae(
    event_shape: tuple[int, ...],
    dataset: Any,
    channels: int = 32,
    latent_channels: int = 4,
    scales: int = 2,
    groups_per_scale: int = 2,
    cells: int = 1,
    preprocess: int = 1,
    likelihood: Literal["bernoulli", "logistic-mixture", "gaussian"] = "logistic-mixture",
    components: int = 10,
    residual_posterior: bool = True,
    spectral_regularization: float = 1e-2,
    bn_momentum: float = BN_MOMENTUM,
    activation: ActivationName = "swish",
    squeeze_excitation: bool = True,
    depthwise: bool = True,
    soft_clamp: bool = True,
) -> HierarchicalVAE:
    """NVAE-style hierarchical VAE on images (C, H, W); every bit is an option with NVAE's value.
    ``spectral_regularization``: λ (0 turns it off); ``likelihood`` must fit the data (logistic-mixture: grey
    levels, bernoulli: binarized) with ``components`` logistics per pixel."""
    if len(event_shape) != 3:
        raise ValueError(f"hvae models images (C, H, W); this dataset has event shape {tuple(event_shape)}")
    for name, value in (("channels", channels), ("latent_channels", latent_channels), ("scales", scales)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if groups_per_scale < 1 or cells < 1 or preprocess < 0:
        raise ValueError("need groups_per_scale >= 1, cells >= 1 and preprocess >= 0")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {likelihood!r}")
    if spectral_regularization < 0:
        raise ValueError(f"spectral_regularization must be >= 0, got {spectral_regularization}")
    return HierarchicalVAE(
        tuple(event_shape),
        build_likelihood(likelihood, dataset.levels, components),
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
        soft_clamp,
    )
