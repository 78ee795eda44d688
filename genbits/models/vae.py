"""The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014) with its choices as arguments.

p(x) = ∫ p(x | z) p(z) dz is intractable, so the model offers its bounds, never a ``log_prob``: the ELBO in parts
(reconstruction, KL per latent unit) and importance weights log p(x, z) − log q(z | x) for the IWAE bound and the
importance-sampled NLL (``models/latent.py``). The pieces:

- nets: ``mlp`` (any event, flattened; ``depth=0`` makes encoder and decoder linear, probabilistic PCA with a
  Gaussian likelihood) or ``conv`` (images: two stride-2 convs down, two upsample-convs back), with ``norm`` and
  ``activation`` as arguments;
- likelihood (``nn/likelihoods.py``): Bernoulli on binarized data, the discretized logistic mixture on grey levels,
  Gaussian with fixed or learned scale;
- posterior: a diagonal Gaussian, or ``flow``: that Gaussian pushed through a flow of ``models/flows.py`` in its
  one-pass direction (an inverse autoregressive flow for ``maf``, Kingma et al. 2016; coupling layers otherwise). The
  flow's weights are shared across x (no context input): the Gaussian is amortized, the warp is global;
- prior: N(0, I), a flow (``models/flows.py``), or the VampPrior, the mixture of the posteriors of K learned
  pseudo-inputs (Tomczak & Welling 2018).

With a Gaussian posterior and the normal prior the KL is closed form per unit; otherwise it is the one-sample
estimate log q(z | x) − log p(z), still an unbiased term of the same ELBO. In training the reparameterization noise
comes from the batch's per-example ``noise`` (``train/stream.py``), so a run split over processes trains exactly as
one process; without it (evaluation) from the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from genbits.data.base import require
from genbits.models.base import check_how, refuse_condition, standard_normal_log_prob, temperature
from genbits.models.flows import flow as build_flow
from genbits.models.latent import ElboParts, diagonal_normal_log_prob, iwae_bound, kl_diagonal_normals, soft_clamp
from genbits.nn.activations import ACTIVATIONS, ActivationName
from genbits.nn.likelihoods import LIKELIHOODS, Likelihood, build_likelihood
from genbits.nn.norms import ACTIVATION_NORMS, activation_norm
from genbits.registry import MODELS
from genbits.train.stream import ExampleNoise

LOG_SCALE_BOUND = 8.0  # posterior log σ ∈ [−8, 8] by a soft clamp: no exp overflow early in training


# ----------------------------------------------------------------------------------------------------
# Nets: x → features (encoder), z → likelihood parameters (B, P, *event) (decoder).


def _layer(fan_in: int, fan_out: int, norm: str, activation: str) -> list[nn.Module]:
    return [nn.Linear(fan_in, fan_out), activation_norm(norm, fan_out, False), ACTIVATIONS[activation]()]


class MLPEncoder(nn.Sequential):
    """Flatten → ``depth`` × (linear → norm → activation); ``depth=0`` passes the flat data through."""

    def __init__(self, features: int, width: int, depth: int, norm: str, activation: str):
        sizes = [features] + [width] * depth
        super().__init__(
            nn.Flatten(), *[m for a, b in zip(sizes, sizes[1:], strict=False) for m in _layer(a, b, norm, activation)]
        )
        self.out_features = sizes[-1]


class MLPDecoder(nn.Module):
    """z → ``depth`` × (linear → norm → activation) → linear to P numbers per data dimension."""

    def __init__(
        self, latent: int, event_shape: Sequence[int], params: int, width: int, depth: int, norm: str, activation: str
    ):
        super().__init__()
        sizes = [latent] + [width] * depth
        self.body = nn.Sequential(
            *[m for a, b in zip(sizes, sizes[1:], strict=False) for m in _layer(a, b, norm, activation)]
        )
        self.out = nn.Linear(sizes[-1], params * math.prod(event_shape))
        self.shape = (params, *event_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.body(z)).unflatten(1, self.shape)


def _down(size: int) -> int:
    """Spatial size after a 4×4 conv with stride 2 and padding 1."""
    return (size + 2 - 4) // 2 + 1


class ConvEncoder(nn.Module):
    """(C, H, W) → 3×3 conv → 2 × (4×4 stride-2 conv → norm → activation) → linear → norm → activation."""

    def __init__(self, event_shape: Sequence[int], width: int, norm: str, activation: str):
        super().__init__()
        channels, height, breadth = event_shape
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), ACTIVATIONS[activation]()]
        for a, b in ((width, width), (width, 2 * width)):
            layers += [
                nn.Conv2d(a, b, 4, stride=2, padding=1),
                activation_norm(norm, b, True),
                ACTIVATIONS[activation](),
            ]
        self.convs = nn.Sequential(*layers)
        flat = 2 * width * _down(_down(height)) * _down(_down(breadth))
        self.head = nn.Sequential(nn.Flatten(), *_layer(flat, 8 * width, norm, activation))
        self.out_features = 8 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x))


class ConvDecoder(nn.Module):
    """z → linear → (2·width, H/4, W/4) → 2 × (upsample to the encoder's sizes → 3×3 conv → norm → activation) →
    3×3 conv to P·C channels. Upsampling to recorded sizes inverts any H, W (28 → 14 → 7 and back, 14 → 7 → 3)."""

    def __init__(self, latent: int, event_shape: Sequence[int], params: int, width: int, norm: str, activation: str):
        super().__init__()
        channels, height, breadth = event_shape
        self.sizes = [(_down(height), _down(breadth)), (height, breadth)]
        self.start = (2 * width, _down(_down(height)), _down(_down(breadth)))
        self.project = nn.Sequential(nn.Linear(latent, math.prod(self.start)), ACTIVATIONS[activation]())
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), activation_norm(norm, b, True), ACTIVATIONS[activation]())
            for a, b in ((2 * width, width), (width, width))
        )
        self.out = nn.Conv2d(width, params * channels, 3, padding=1)
        self.shape = (params, *event_shape)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).unflatten(1, self.start)
        for size, stage in zip(self.sizes, self.stages, strict=True):
            h = stage(nn.functional.interpolate(h, size=size, mode="nearest"))
        return self.out(h).unflatten(1, self.shape[:2])


# ----------------------------------------------------------------------------------------------------
# The model.


class VAE(nn.Module):
    """An encoder q(z | x), a decoder p(x | z) and a prior p(z); see the module docstring.

    Unconditional: a ``y`` is refused. Sampling understands ``temperature`` T: the prior's base noise scaled by T.
    """

    SAMPLING_OPTIONS = ("temperature",)

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent: int,
        event_shape: Sequence[int],
        posterior_flow: nn.Module | None = None,
        prior_flow: nn.Module | None = None,
        pseudo_inputs: int = 0,
    ):
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent, self.event_shape = latent, torch.Size(event_shape)
        self.posterior_head = nn.Linear(encoder.out_features, 2 * latent)
        self.posterior_flow, self.prior_flow = posterior_flow, prior_flow
        # VampPrior pseudo-inputs start as noise around mid-grey / the data scale (Tomczak & Welling 2018 §3)
        self.pseudo_inputs = (
            nn.Parameter(0.5 + 0.1 * torch.randn(pseudo_inputs, *event_shape)) if pseudo_inputs else None
        )
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    # -- the posterior q(z | x)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian part of q(z | x): (loc, log σ), (B, latent) each."""
        loc, log_scale = self.posterior_head(self.encoder(x)).chunk(2, dim=-1)
        return loc, soft_clamp(log_scale, LOG_SCALE_BOUND)

    def rsample_posterior(
        self, x: Tensor, k: int, noise: ExampleNoise | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """k reparameterized draws z ~ q(z | x) per example: z (k, B, latent), log q(z | x) (k, B), and the Gaussian's
        (loc, log σ). The base noise comes from ``noise`` when given, else from the global RNG."""
        loc, log_scale = self.posterior(x)
        if noise is None:
            eps = torch.randn((k, *loc.shape), device=loc.device, dtype=loc.dtype)
        else:
            eps = noise.normal((k, self.latent), device=loc.device, dtype=loc.dtype).transpose(0, 1)
        z = loc + torch.exp(log_scale) * eps
        log_q = diagonal_normal_log_prob(z, loc, log_scale).sum(-1)
        if self.posterior_flow is not None:
            warped, ladj = self.posterior_flow(z.reshape(-1, self.latent))
            z, log_q = warped.reshape(z.shape), log_q - ladj.reshape(log_q.shape)
        return z, log_q, loc, log_scale

    # -- the prior p(z)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) for z (..., latent) → (...)."""
        if self.prior_flow is not None:
            return self.prior_flow.log_prob(z.reshape(-1, self.latent)).reshape(z.shape[:-1])
        if self.pseudo_inputs is not None:
            loc, log_scale = self.posterior(self.pseudo_inputs)  # (K, latent)
            per_component = diagonal_normal_log_prob(z.unsqueeze(-2), loc, log_scale).sum(-1)  # (..., K)
            return torch.logsumexp(per_component, -1) - math.log(len(loc))
        return standard_normal_log_prob(z)

    def sample_prior(self, n: int, tau: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        a = self._anchor
        noise = tau * torch.randn(n, self.latent, generator=generator, device=a.device, dtype=a.dtype)
        if self.prior_flow is not None:
            return self.prior_flow.transform.inverse(noise)[0]
        if self.pseudo_inputs is not None:
            loc, log_scale = self.posterior(self.pseudo_inputs)
            pick = torch.randint(len(loc), (n,), generator=generator, device=a.device)
            return loc[pick] + torch.exp(log_scale[pick]) * noise
        return noise

    @property
    def analytic_kl(self) -> bool:
        """KL in closed form per unit: a Gaussian posterior against the standard normal prior."""
        return self.posterior_flow is None and self.prior_flow is None and self.pseudo_inputs is None

    # -- the bounds

    def elbo_parts(self, x: Tensor, y: Tensor | None = None, noise: ExampleNoise | None = None) -> ElboParts:
        refuse_condition("vae", y)
        z, log_q, loc, log_scale = self.rsample_posterior(x, 1, noise)
        reconstruction = self.likelihood.log_prob(self.decoder(z[0]), x)
        if self.analytic_kl:
            kl = kl_diagonal_normals(loc, log_scale, torch.zeros_like(loc), torch.zeros_like(log_scale))
        else:
            kl = log_q[0] - self.prior_log_prob(z[0])
        return ElboParts(reconstruction, {"z": kl})

    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """A one-sample estimate of the ELBO per example, (B,) nats, in the data's convention (``nn/likelihoods``)."""
        return self.elbo_parts(x, y).elbo()

    def elbo_terms(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """``reconstruction`` (−log p(x | z)) and ``kl/z``, nats: they sum to −ELBO."""
        return self.elbo_parts(x, y).terms()

    def log_weights(self, x: Tensor, y: Tensor | None = None, k: int = 1, noise: ExampleNoise | None = None) -> Tensor:
        """log p(x | z_i) + log p(z_i) − log q(z_i | x) for k draws z_i ~ q(z | x): (k, B)."""
        refuse_condition("vae", y)
        if k < 1:
            raise ValueError(f"k (importance samples) must be >= 1, got {k}")
        z, log_q, _, _ = self.rsample_posterior(x, k, noise)
        params = self.decoder(z.reshape(-1, self.latent))
        repeated = x.unsqueeze(0).expand(k, *x.shape).reshape(-1, *x.shape[1:])
        log_px = self.likelihood.log_prob(params, repeated).reshape(k, len(x))
        return log_px + self.prior_log_prob(z) - log_q

    def iwae(self, x: Tensor, k: int) -> Tensor:
        """The IWAE bound at k per example, (B,)."""
        return iwae_bound(self.log_weights(x, None, k))

    @torch.no_grad()
    def posterior_mean(self, x: Tensor, draws: int = 64) -> Tensor:
        """E_q[z | x], (B, latent): the Gaussian's mean, or a Monte Carlo mean through the flow posterior."""
        if self.posterior_flow is None:
            return self.posterior(x)[0]
        return self.rsample_posterior(x, draws)[0].mean(0)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x | z] at z = E_q[z | x]."""
        return self.decode_mean(self.posterior_mean(x))

    # -- generation

    @torch.no_grad()
    def decode_mean(self, z: Tensor) -> Tensor:
        """E[x | z]: what reconstructions and latent-space figures show."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """x ~ p(x | z), z ~ p(z) (base noise scaled by ``temperature``): (n, *event_shape)."""
        refuse_condition("vae", y)
        check_how("vae", how, self.SAMPLING_OPTIONS)
        z = self.sample_prior(n, temperature(how), generator)
        return self.likelihood.sample(self.decoder(z), generator)


# ----------------------------------------------------------------------------------------------------
# The registered factory.


@MODELS.register("vae")
def vae(
    event_shape: Sequence[int],
    dataset: Any,
    latent: int = 8,
    arch: Literal["mlp", "conv"] = "mlp",
    width: int = 128,
    depth: int = 2,
    norm: Literal["none", "batch", "layer", "group"] = "none",
    activation: ActivationName = "relu",
    likelihood: Literal["bernoulli", "logistic-mixture", "gaussian"] = "gaussian",
    components: int = 5,
    scale: float | None = None,
    posterior: Literal["gaussian", "flow"] = "gaussian",
    prior: Literal["normal", "flow", "vamp"] = "normal",
    flow_transform: Literal["affine-coupling", "maf", "spline-coupling"] = "maf",
    flow_layers: int = 2,
    flow_hidden: tuple[int, ...] = (64, 64),
    pseudo_inputs: int = 100,
) -> VAE:
    """A VAE on the dataset's events: ``likelihood`` must fit the data (bernoulli: binarized, logistic-mixture: grey
    levels, gaussian: anything not binarized; ``scale`` fixes its σ, unset learns it); ``components`` logistics per
    pixel; ``flow_*`` build the flow posterior and the flow prior; ``pseudo_inputs`` K of the VampPrior."""
    shape = tuple(event_shape)
    require(latent >= 1, f"latent must be >= 1, got {latent}")
    require(width >= 1 and depth >= 0, f"width must be >= 1 and depth >= 0, got width={width}, depth={depth}")
    require(norm in ACTIVATION_NORMS, f"norm must be one of {', '.join(ACTIVATION_NORMS)}; got {norm!r}")
    require(activation in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
    require(likelihood in LIKELIHOODS, f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {likelihood!r}")
    require(posterior in ("gaussian", "flow"), f"posterior must be gaussian or flow; got {posterior!r}")
    require(prior in ("normal", "flow", "vamp"), f"prior must be normal, flow or vamp; got {prior!r}")
    require(flow_layers >= 1, f"flow_layers must be >= 1, got {flow_layers}")
    require(pseudo_inputs >= 1, f"pseudo_inputs must be >= 1, got {pseudo_inputs}")
    observation = build_likelihood(likelihood, dataset.levels, components, scale)
    if arch == "conv":
        require(len(shape) == 3, f"arch 'conv' needs images (C, H, W); the data are {shape}: use arch=mlp")
        require(min(shape[1:]) >= 4, f"arch 'conv' needs images of at least 4×4 pixels; got {shape}")
        encoder: nn.Module = ConvEncoder(shape, width, norm, activation)
        decoder: nn.Module = ConvDecoder(latent, shape, observation.num_params, width, norm, activation)
    else:
        encoder = MLPEncoder(math.prod(shape), width, depth, norm, activation)
        decoder = MLPDecoder(latent, shape, observation.num_params, width, depth, norm, activation)

    def latent_flow() -> nn.Module:
        return build_flow((latent,), transform=flow_transform, layers=flow_layers, hidden=flow_hidden)

    return VAE(
        encoder,
        decoder,
        observation,
        latent,
        shape,
        posterior_flow=latent_flow().transform if posterior == "flow" else None,
        prior_flow=latent_flow() if prior == "flow" else None,
        pseudo_inputs=pseudo_inputs if prior == "vamp" else 0,
    )
