"""Denoising diffusion: a fixed forward process that noises data into N(0, I) and a network that undoes it.

**Forward process** (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"): x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε,
ε ~ N(0, I). A :class:`Schedule` says how ᾱ falls with the time t:

- :class:`DiscreteSchedule`: t ∈ {1, …, T} with a table of ᾱ (DDPM's linear β 1e-4 → 0.02, Nichol & Dhariwal 2021's
  cosine, or any decreasing table); the network sees t/T.
- :class:`SigmaSchedule`: continuous t ∈ [0, 1] through the noise level σ = √((1 − ᾱ)/ᾱ) of x_t/√ᾱ = x₀ + σε,
  spaced as in Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models", EDM), with
  uniform or EDM's log-normal training times; the network sees EDM's c_noise = ln(σ)/4.

**Prediction targets**: the network predicts ε, x₀ or v = √ᾱ ε − √(1 − ᾱ) x₀ (Salimans & Ho 2022); :func:`convert`
turns any one into another given x_t, so samplers and the bound only ever ask for ε.

**The bound** (:func:`elbo_terms`): a diffusion model is a hierarchical VAE whose latents x_1 … x_T have the data's
shape, so log p(x₀) ≥ −(L_T + Σ_{t≥2} L_{t−1} + L₀) (Ho et al. 2020, Eq. 5) with a discretized Gaussian decoder on
the data's grey levels, a bound on the same discrete likelihood that flows bound by dequantization.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from genbits.errors import ConfigError
from genbits.models.base import check_how, num_classes_of
from genbits.registry import MODELS, closest

Prediction = Literal["eps", "x0", "v"]
Variance = Literal["beta", "beta-tilde"]
EpsFn = Callable[[Tensor, int], Tensor]
"""ε̂(x_t, k): the noise predicted at level k of a grid of ᾱ values (what samplers and the bound call)."""

# ----------------------------------------------------------------------------------------------------
# Schedules.


class Schedule:
    """How much signal is left at time t: ᾱ(t) in float64 (the tails of ᾱ need it), and what the network sees."""

    def alpha_bar(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def noise_input(self, t: Tensor) -> Tensor:
        """The per-example float the denoiser embeds (the network is agnostic to its meaning)."""
        raise NotImplementedError

    def sample_t(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """Training times, from the global RNG (seeded and checkpointed by the loop)."""
        raise NotImplementedError

    def grid(self, count: int, spacing: str | None = None) -> Tensor:
        """``count`` sampling times from the noisiest down; ``spacing`` None: the schedule's default."""
        raise NotImplementedError

    def bound_times(self) -> Tensor:
        """The times t_1 < … < t_N of the discrete hierarchy whose variational bound :func:`elbo_terms` computes."""
        raise NotImplementedError


class DiscreteSchedule(Schedule):
    """t ∈ {1, …, T}; ``alpha_bars[t − 1]`` = ᾱ_t, strictly decreasing in (0, 1); ᾱ_0 = 1 (the data)."""

    SPACINGS = ("trailing", "leading", "linspace", "quadratic")

    def __init__(self, alpha_bars: Tensor):
        alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64)
        if alpha_bars.ndim != 1 or len(alpha_bars) < 1:
            raise ValueError(f"an ᾱ table is one non-empty row, got shape {tuple(alpha_bars.shape)}")
        if not (alpha_bars > 0).all() or not (alpha_bars < 1).all() or not (alpha_bars.diff() < 0).all():
            raise ValueError("an ᾱ table must fall strictly inside (0, 1)")
        self.alpha_bars = alpha_bars
        self.T = len(alpha_bars)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiscreteSchedule:
        """Ho et al. 2020: β_t linear from β_1 to β_T, ᾱ_t = Π_{s ≤ t} (1 − β_s)."""
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiscreteSchedule:
        """Nichol & Dhariwal 2021: f(t) = cos²((t/T + s)/(1 + s) · π/2), β_t = min(1 − f(t)/f(t − 1), 0.999),
        ᾱ = cumprod(1 − β) (so ᾱ_T is tiny but not 0)."""
        t = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        return cls(torch.cumprod(1 - betas, 0))

    @property
    def betas(self) -> Tensor:
        """β_t = 1 − ᾱ_t/ᾱ_{t−1}, t = 1 … T."""
        previous = torch.cat([self.alpha_bars.new_ones(1), self.alpha_bars[:-1]])
        return 1 - self.alpha_bars / previous

    def alpha_bar(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        table = torch.cat([self.alpha_bars.new_ones(1), self.alpha_bars]).to(t.device)
        return table[t.long()]

    def noise_input(self, t: Tensor) -> Tensor:
        return torch.as_tensor(t).float() / self.T

    def sample_t(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.randint(1, self.T + 1, (n,), device=device)

    def grid(self, count: int, spacing: str | None = None) -> Tensor:
        """Descending times. ``trailing`` (default; Lin et al. 2024): T, T − T/K, …, ending at ≥ 1, so the first
        step starts from pure noise; ``leading`` (DDIM / diffusers): (K−1)·⌊T/K⌋ + 1, …, 1; ``linspace``:
        round(linspace(T, 1, K)); ``quadratic`` (Song et al. 2021, DDIM): times growing as i²."""
        spacing = spacing or "trailing"
        if not 1 <= count <= self.T:
            raise ConfigError(f"sampling option steps: {count} is out of range; this model has T = {self.T} steps")
        K, T = count, self.T
        if spacing == "trailing":
            t = torch.round(torch.arange(T, 0, -T / K, dtype=torch.float64)).long()
        elif spacing == "leading":
            t = torch.arange(K - 1, -1, -1) * (T // K) + 1
        elif spacing == "linspace":
            t = torch.round(torch.linspace(T, 1, K, dtype=torch.float64)).long()
        elif spacing == "quadratic":
            t = (torch.linspace(0, math.sqrt(0.8 * T), K, dtype=torch.float64) ** 2).long().flip(0) + 1
        else:
            raise ConfigError(
                f"sampling option spacing: {spacing!r} is unknown for a discrete schedule; "
                f"use one of {', '.join(self.SPACINGS)}{closest(spacing, self.SPACINGS)}"
            )
        t = t[:K]
        if len(t.unique()) != K:
            raise ConfigError(f"sampling option spacing: {spacing} spacing repeats times at {K} steps of T = {T}")
        return t

    def bound_times(self) -> Tensor:
        return torch.arange(1, self.T + 1)


class SigmaSchedule(Schedule):
    """Continuous t ∈ [0, 1] ↦ σ(t) = (σ_min^{1/ρ} + t (σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ (Karras et al. 2022, Eq. 5),
    ᾱ = 1/(1 + σ²). A uniform grid in t is EDM's time discretization; ``log-normal`` training draws
    ln σ ~ N(p_mean, p_std²) (EDM's p_train), clipped to [σ_min, σ_max]."""

    SPACINGS = ("karras", "log-sigma")

    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        training: Literal["uniform", "log-normal"] = "uniform",
        p_mean: float = -1.2,
        p_std: float = 1.2,
        bound_steps: int = 1000,
    ):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.training, self.p_mean, self.p_std, self.bound_steps = training, p_mean, p_std, bound_steps

    def sigma(self, t: Tensor) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (lo + torch.as_tensor(t, dtype=torch.float64) * (hi - lo)) ** self.rho

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (sigma.double() ** (1 / self.rho) - lo) / (hi - lo)

    def alpha_bar(self, t: Tensor) -> Tensor:
        return 1 / (1 + self.sigma(t) ** 2)

    def noise_input(self, t: Tensor) -> Tensor:
        return (self.sigma(t).log() / 4).float()

    def sample_t(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        if self.training == "uniform":
            return torch.rand(n, device=device, dtype=torch.float64)
        sigma = (self.p_mean + self.p_std * torch.randn(n, device=device, dtype=torch.float64)).exp()
        return self.t_of_sigma(sigma.clamp(self.sigma_min, self.sigma_max))

    def grid(self, count: int, spacing: str | None = None) -> Tensor:
        """Descending times from t = 1 (σ_max) to t = 0 (σ_min): ``karras`` (default, ρ-spaced σ) or
        ``log-sigma`` (uniform in ln σ)."""
        spacing = spacing or "karras"
        if count < 1:
            raise ConfigError(f"sampling option steps: need at least 1, got {count}")
        if count == 1:
            return torch.ones(1, dtype=torch.float64)
        if spacing == "karras":
            return torch.linspace(1, 0, count, dtype=torch.float64)
        if spacing == "log-sigma":
            log_sigma = torch.linspace(math.log(self.sigma_max), math.log(self.sigma_min), count, dtype=torch.float64)
            return self.t_of_sigma(log_sigma.exp()).clamp(0, 1)
        raise ConfigError(
            f"sampling option spacing: {spacing!r} is unknown for a σ schedule; "
            f"use one of {', '.join(self.SPACINGS)}{closest(spacing, self.SPACINGS)}"
        )

    def bound_times(self) -> Tensor:
        return torch.linspace(0, 1, self.bound_steps, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------
# The forward process and the prediction targets.


def expand(a: Tensor, x: Tensor) -> Tensor:
    """A per-example (B,) or scalar coefficient broadcast against x (B, *event), in x's dtype."""
    a = torch.as_tensor(a, device=x.device).to(x.dtype)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def q_sample(x0: Tensor, alpha_bar: Tensor, eps: Tensor) -> Tensor:
    """x_t = √ᾱ x₀ + √(1 − ᾱ) ε: a draw from q(x_t | x₀) given the noise."""
    return expand(alpha_bar.sqrt(), x0) * x0 + expand((1 - alpha_bar).sqrt(), x0) * eps


def posterior(x0: Tensor, x_t: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor) -> tuple[Tensor, Tensor]:
    """q(x_s | x_t, x₀) for s < t (s = t − 1 in DDPM; any earlier level on a strided grid): mean
    √ᾱ_s β x₀/(1 − ᾱ_t) + √α (1 − ᾱ_s) x_t/(1 − ᾱ_t) and variance β̃ = β (1 − ᾱ_s)/(1 − ᾱ_t), with
    α = ᾱ_t/ᾱ_s, β = 1 − α (Ho et al. 2020, Eqs. 6–7). Returns (mean, variance (B,) or scalar)."""
    alpha = alpha_bar / alpha_bar_prev
    beta = 1 - alpha
    mean = (
        expand(alpha_bar_prev.sqrt() * beta / (1 - alpha_bar), x0) * x0
        + expand(alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar), x0) * x_t
    )
    return mean, beta * (1 - alpha_bar_prev) / (1 - alpha_bar)


def convert(pred: Tensor, source: Prediction, target: Prediction, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """Turn a prediction of ε, x₀ or v at x_t into another: with a = √ᾱ, s = √(1 − ᾱ), x_t = a x₀ + s ε and
    v = a ε − s x₀, so x₀ = a x_t − s v and ε = s x_t + a v."""
    if source == target:
        return pred
    a, s = expand(alpha_bar.sqrt(), x_t), expand((1 - alpha_bar).sqrt(), x_t)
    if source == "eps":
        x0, eps = (x_t - s * pred) / a, pred
    elif source == "x0":
        x0, eps = pred, (x_t - a * pred) / s
    else:
        x0, eps = a * x_t - s * pred, s * x_t + a * pred
    return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[target]


# ----------------------------------------------------------------------------------------------------
# The variational bound.


def log_gaussian_bin(x: Tensor, mean: Tensor, std: Tensor, half_width: float) -> Tensor:
    """log ∫ N(u; mean, std²) du over [x − h, x + h], the end bins open to ±∞ at x = ±1 (Ho et al. 2020, Eq. 13):
    the discretized Gaussian decoder on levels spaced 2h apart in [−1, 1]. Element-wise, stable in the tails."""
    upper = (x + half_width - mean) / std
    lower = (x - half_width - mean) / std
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    # Φ(b) − Φ(a) without cancellation: in the upper tail as (1 − Φ(a)) − (1 − Φ(b))
    flip = lower > 0
    big = torch.where(flip, log_sf_lower, log_cdf_upper)
    small = torch.where(flip, torch.special.log_ndtr(-upper), torch.special.log_ndtr(lower))
    middle = big + torch.log1p(-torch.exp((small - big).clamp(max=-1e-12)))
    out = torch.where(x < -1 + half_width, log_cdf_upper, torch.where(x > 1 - half_width, log_sf_lower, middle))
    return out.clamp(min=math.log(1e-12))


def elbo_terms(
    eps_fn: EpsFn,
    x0: Tensor,
    alpha_bars: Tensor,
    levels: int | None = None,
    variance: Variance = "beta",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The terms of −ELBO in nats per example (B,), for the hierarchy x₀ → x_1 → … → x_N with ᾱ = ``alpha_bars``
    (decreasing; ``eps_fn(x, i)`` predicts ε at level i, 0-based). Ho et al. 2020, Eq. 5:

    - ``L_T`` = KL(q(x_N | x₀) ‖ N(0, I)), in closed form;
    - ``L_{t−1}`` (t = 2 … N) = KL(q(x_{t−1} | x_t, x₀) ‖ p(x_{t−1} | x_t)) between Gaussians: the reverse mean is the
      posterior mean at the predicted x₀, the reverse variance σ_t² = β_t or β̃_t (``variance``), at one
      x_t ~ q(x_t | x₀) per example (an unbiased estimate of the term). β̃ is right for data concentrated on a
      point, β for spread-out data (Ho et al. 2020, Sec. 3.2): with an exact denoiser of continuous data the
      bound with β tends to log p(x₀) as N grows, the one with β̃ stays above it by a constant from the first steps;
    - ``L_0`` = −log p(x₀ | x_1), a Gaussian with the predicted x₀ as mean and variance β_1 = 1 − ᾱ_1 (β̃_1 is 0):
      discretized on ``levels`` grey levels in [−1, 1] for images (a bound on the discrete likelihood), a density
      for continuous data.
    """
    dtype, x0 = x0.dtype, x0.double()
    B, D = x0.shape[0], x0[0].numel()
    N = len(alpha_bars)
    ab = alpha_bars.to(x0.device, torch.float64)

    def noised(i: int) -> tuple[Tensor, Tensor]:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device="cpu").to(x0.device)
        x_t = q_sample(x0, ab[i], eps)
        return x_t, convert(eps_fn(x_t.to(dtype), i).double(), "eps", "x0", x_t, ab[i])

    flat = x0.reshape(B, D)
    terms = {"L_T": 0.5 * (ab[-1] * flat**2 + (1 - ab[-1]) - 1 - torch.log1p(-ab[-1])).sum(-1)}
    for i in range(1, N):  # level i is time t = i + 1; its term is L_{t−1} = L_i
        x_t, x0_hat = noised(i)
        mean, var = posterior(x0, x_t, ab[i], ab[i - 1])
        mean_hat, _ = posterior(x0_hat, x_t, ab[i], ab[i - 1])
        model_var = var if variance == "beta-tilde" else 1 - ab[i] / ab[i - 1]
        gap = ((mean - mean_hat) ** 2).reshape(B, D).sum(-1) / (2 * model_var)
        terms[f"L_{i}"] = gap + 0.5 * D * (var / model_var - 1 - torch.log(var / model_var))
    x_1, x0_hat = noised(0)
    std = (1 - ab[0]).sqrt()
    if levels is None:
        log_p = -0.5 * ((x0 - x0_hat) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
    else:
        log_p = log_gaussian_bin(x0, x0_hat, std, 1 / (levels - 1))
    terms["L_0"] = -log_p.reshape(B, D).sum(-1)
    return {k: v.to(dtype) for k, v in terms.items()}


# ----------------------------------------------------------------------------------------------------
# The model.


class Diffusion(nn.Module):
    """A denoiser network and a schedule. Images (data in [0, 1]) live in [−1, 1] inside the model; continuous data
    as they are. A conditional model (``num_classes`` set) passes labels to the network, the null class
    ``num_classes`` meaning "no condition" (classifier-free guidance)."""

    SAMPLING_OPTIONS: tuple[str, ...] = (
        "sampler",
        "steps",
        "spacing",
        "eta",
        "variance",
        "guidance",
        "classifier",
        "clip",
    )

    def __init__(
        self,
        net: nn.Module,
        schedule: Schedule,
        prediction: Prediction,
        event_shape: tuple[int, ...],
        levels: int | None,
        num_classes: int | None = None,
        variance: Variance = "beta",
    ):
        super().__init__()
        self.net, self.schedule, self.prediction, self.variance = net, schedule, prediction, variance
        self.event_shape, self.levels = tuple(event_shape), levels
        if num_classes is not None:
            self.num_classes = num_classes

    # -- data space ↔ model space
    def to_model(self, x: Tensor) -> Tensor:
        return x * 2 - 1 if self.levels is not None else x

    def from_model(self, x: Tensor) -> Tensor:
        return (x + 1) / 2 if self.levels is not None else x

    def labels(self, y: Tensor | None, n: int) -> Tensor | None:
        """Labels for the network: y as given, the null class where y is None (conditional), None (unconditional)."""
        classes = num_classes_of(self)
        if classes is None:
            if y is not None:
                raise ValueError("this diffusion model is unconditional: got a conditioning input y, expected None")
            return None
        return torch.full((n,), classes, dtype=torch.long, device=self.device) if y is None else y

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    # -- the network
    def predict(self, x_t: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """The network's raw output (the ``prediction`` target) at x_t, times t (B,), labels y."""
        noise = self.schedule.noise_input(t).to(x_t.device).expand(x_t.shape[0])
        return self.net(x_t, noise, y)

    def eps(self, x_t: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        alpha_bar = self.schedule.alpha_bar(t).to(x_t.device).expand(x_t.shape[0])
        return convert(self.predict(x_t, t, y), self.prediction, "eps", x_t, alpha_bar)

    def eps_fn(self, times: Tensor, labels: Tensor | None) -> EpsFn:
        """ε̂(x, k) at the k-th of ``times``, with the network's labels (see :meth:`labels`)."""
        return lambda x, k: self.eps(x, times[k], labels)

    # -- LatentVariable
    def elbo_terms(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """The terms of −ELBO (nats, (B,)) over the schedule's hierarchy (:func:`elbo_terms`); y None on a
        conditional model: the bound of the unconditional (null-class) model."""
        times = self.schedule.bound_times()
        labels = self.labels(y, len(x))
        eps_fn = self.eps_fn(times, labels)
        return elbo_terms(eps_fn, self.to_model(x), self.schedule.alpha_bar(times), self.levels, self.variance)

    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """A lower bound on log p(x | y) in nats, (B,): on the discrete grey levels for images (comparable with the
        flows' dequantized NLL), a density bound for continuous data."""
        return -sum(self.elbo_terms(x, y).values())

    # -- Generative
    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """n samples in data space. Options (all of the call, none of the run): ``sampler`` (ddpm, ddim, heun,
        dpm-solver++; default ddpm on a discrete schedule, heun on a σ schedule), ``steps`` (network evaluations;
        default T, or 35 for heun), ``spacing`` of the times, ``eta`` (ddim), ``variance`` (ddpm: beta-tilde or
        beta), ``guidance`` (scale: classifier-free w, or classifier scale s with ``classifier``: a run directory of
        a noise-conditional classifier), ``clip`` (images: the data prediction x̂₀ clipped to the data range at every
        step, default true; see ``genbits/sampling/clipping.py``). A conditional model draws uniform labels when y
        is None."""
        from genbits.sampling import draw

        check_how("diffusion", how, self.SAMPLING_OPTIONS)
        return self.from_model(draw(self, n, y, generator, **how))


def parse_schedule(name: str, steps: int, options: dict[str, Any]) -> Schedule:
    if name == "linear":
        return DiscreteSchedule.linear(steps, **options)
    if name == "cosine":
        return DiscreteSchedule.cosine(steps, **options)
    if name == "table":
        return DiscreteSchedule(torch.as_tensor(options["alpha_bars"], dtype=torch.float64))
    return SigmaSchedule(**options)


NET_MODULES = {"mlp": "genbits.nn.mlp:MLPDenoiser", "unet": "genbits.nn.unet:UNet"}


def build_net(net: str, event_shape: tuple[int, ...], num_classes: int | None, options: dict[str, Any]) -> nn.Module:
    """The denoiser ``net`` for this event shape; ``options`` are its constructor's, with ``norm`` and
    ``activation`` given by name (resolved here, once)."""
    import importlib

    from genbits.nn.activations import ACTIVATIONS
    from genbits.nn.norms import Norm

    options = dict(options)
    if "norm" in options:
        options["norm"] = Norm.named(options["norm"])
    if "activation" in options:
        name = options["activation"]
        if name not in ACTIVATIONS:
            raise ValueError(f"net_options.activation: {name!r} is unknown; use one of {', '.join(ACTIVATIONS)}")
        options["activation"] = ACTIVATIONS[name]
    module, attr = NET_MODULES[net].split(":")
    factory = getattr(importlib.import_module(module), attr)
    try:
        return factory(event_shape, num_classes=num_classes, **options)
    except TypeError as e:
        raise ValueError(f"net_options: {e}") from None


@MODELS.register("diffusion")
def diffusion(
    event_shape: tuple[int, ...],
    num_classes: int | None = None,
    dataset: Any = None,
    net: Literal["mlp", "unet"] = "mlp",
    net_options: dict | None = None,
    schedule: Literal["linear", "cosine", "table", "sigma"] = "linear",
    steps: int = 1000,
    schedule_options: dict | None = None,
    prediction: Prediction = "eps",
    variance: Variance = "beta",
    conditional: bool = False,
) -> Diffusion:
    """A diffusion model: ``net`` (mlp for vectors, unet for images; ``net_options`` its constructor arguments) and
    a ``schedule``: linear (β 1e-4 → 0.02, Ho et al. 2020) or cosine (Nichol & Dhariwal 2021) over ``steps`` = T
    discrete times, ``table`` (schedule_options.alpha_bars: any decreasing ᾱ table), or ``sigma`` (continuous,
    EDM-spaced; schedule_options: sigma_min, sigma_max, rho, training = uniform | log-normal, p_mean, p_std).
    ``variance``: σ_t² of the reverse steps p(x_{t−1} | x_t), β_t or β̃_t (Ho et al. 2020): the bound's and the
    ddpm sampler's default. ``conditional``: labels condition the network (needs a labelled dataset)."""
    if conditional and not num_classes:
        raise ValueError("conditional: the dataset has no labels to condition on")
    try:
        sched = parse_schedule(schedule, steps, dict(schedule_options or {}))
    except TypeError as e:
        raise ValueError(f"schedule_options: {e}") from None
    classes = num_classes if conditional else None
    network = build_net(net, tuple(event_shape), classes, dict(net_options or {}))
    levels = getattr(dataset, "levels", None)
    return Diffusion(network, sched, prediction, tuple(event_shape), levels, classes, variance)


def load_classifier(path: str | Path, model: Diffusion) -> tuple[nn.Module, int]:
    """The noise-conditional classifier (a ``Classifier``: ``log_prob_class(x_t, noise, y)``) of a run directory and
    its number of classes, checked against ``model``: the same event shape, the same noise schedule (ᾱ and noise
    input at every time of the model's hierarchy) and, for a conditional model, the same number of classes."""
    from genbits.models.base import Classifier
    from genbits.runs import load_run

    run_dir = Path(path)
    where = f"sampling option classifier: {run_dir}"
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{where} is not a run directory (no config.yaml)")
    run = load_run(run_dir)
    classifier = run.model.to(model.device).eval()
    if not isinstance(classifier, Classifier):
        raise ConfigError(f"{where} holds a {type(classifier).__name__}, not a noise-conditional classifier")
    if tuple(run.dataset.event_shape) != model.event_shape:
        raise ConfigError(
            f"{where} classifies {tuple(run.dataset.event_shape)} inputs; this model makes {model.event_shape}"
        )
    times = model.schedule.bound_times()
    theirs = getattr(classifier, "schedule", None)
    if (
        type(theirs) is not type(model.schedule)
        or len(theirs.bound_times()) != len(times)
        or not torch.allclose(theirs.alpha_bar(times), model.schedule.alpha_bar(times))
        or not torch.allclose(theirs.noise_input(times), model.schedule.noise_input(times))
    ):
        raise ConfigError(f"{where} was trained with another noise schedule than this model's")
    own = num_classes_of(model)
    if own is not None and own != classifier.num_classes:
        raise ConfigError(f"{where} has {classifier.num_classes} classes, this model {own}")
    return classifier, classifier.num_classes
