"""Observation models p(x | params): what a decoder's output means as a distribution over the data.

A decoder outputs ``params`` of shape (B, P, *event_shape): P numbers per data dimension (``num_params``), and the
dimensions are independent given them. Each likelihood gives the per-example log-likelihood in nats (summed over the
event), a sample, and a mean (for reconstructions), in the data's own convention:

- :class:`Bernoulli` on binarized data (levels = 2): the exact log-mass of x ∈ {0, 1}.
- :class:`LogisticMixture` on the data's L grey levels (Salimans et al. 2017, PixelCNN++): the exact log-mass of
  k ∈ {0, …, L − 1}, by differences of logistic CDFs over each level's bin.
- :class:`Gaussian`, fixed or learned variance: a density. On discrete data it scores the uniformly dequantized
  value (k + u)/L and subtracts D·log L, so its expectation is a lower bound on the log-mass (Theis et al. 2016), the
  convention of the flows' NLL; on continuous data it is the plain density.

Data arrive as the datasets give them: grey level k as x = k/(L − 1) ∈ [0, 1]; samples come back the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.data.base import dequantize

LOG_SCALE_MIN = -7.0  # PixelCNN++'s floor on the logistic log-scale: a bin's mass stays representable


def _sum_event(values: Tensor) -> Tensor:
    """(B, *event) → (B,)."""
    return values.flatten(1).sum(1)


class Likelihood(nn.Module):
    """p(x | params) with ``num_params`` decoder outputs per data dimension; see the module docstring."""

    num_params: int

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x | params) per example, (B,), nats."""
        raise NotImplementedError

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x ~ p(· | params), (B, *event)."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """E[x | params], (B, *event): what a reconstruction shows."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """x ∈ {0, 1} with P(x = 1) = sigmoid(logit): binarized images (levels = 2)."""

    num_params = 1

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return -_sum_event(F.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none"))

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.mean(params), generator=generator)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[:, 0])


class Gaussian(Likelihood):
    """N(x; μ, σ²) per dimension: σ fixed (``scale``) or learned (``scale=None``: a second output, log σ ≥ −7).

    With ``levels`` the data are discrete: the density scores the dequantized value and the log-volume of a bin,
    −D·log L, is added, a stochastic lower bound on the discrete log-mass (as the flows' NLL is bounded).
    """

    def __init__(self, scale: float | None = None, levels: int | None = None):
        super().__init__()
        if scale is not None and not (0 < scale < math.inf):
            raise ValueError(f"the Gaussian likelihood's scale must be a finite number > 0 (or learned), got {scale}")
        self.scale, self.levels = scale, levels
        self.num_params = 1 if scale is not None else 2

    def _loc_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        loc = params[:, 0]
        if self.scale is None:
            return loc, params[:, 1].clamp(min=LOG_SCALE_MIN)
        return loc, torch.full_like(loc, math.log(self.scale))

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        loc, log_scale = self._loc_log_scale(params)
        if self.levels is not None:
            x = dequantize(x, self.levels)
        z = (x - loc) * torch.exp(-log_scale)
        log_p = _sum_event(-0.5 * z * z - log_scale - 0.5 * math.log(2 * math.pi))
        return log_p if self.levels is None else log_p - x[0].numel() * math.log(self.levels)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        loc, log_scale = self._loc_log_scale(params)
        noise = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
        x = loc + torch.exp(log_scale) * noise
        if self.levels is None:
            return x
        k = (x * self.levels).floor().clamp(0, self.levels - 1)  # the bin the dequantized value falls in
        return k / (self.levels - 1)

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0]


def log_sub_exp(a: Tensor, b: Tensor) -> Tensor:
    """log(exp(a) − exp(b)) for a ≥ b, stable: a + log(1 − exp(b − a)) (log1mexp, Mächler 2012)."""
    d = (a - b).clamp(min=1e-30)
    return a + torch.where(d < math.log(2), torch.log(-torch.expm1(-d)), torch.log1p(-torch.exp(-d)))


def logistic_bin_log_mass(upper: Tensor, lower: Tensor) -> Tensor:
    """log(σ(upper) − σ(lower)) for upper > lower (standardized bin edges), stable in both tails: right of the
    centre it is computed from the upper tails, σ(−lower) − σ(−upper), where both terms are far from 1."""
    right = (upper + lower) > 0
    left_form = log_sub_exp(F.logsigmoid(upper), F.logsigmoid(lower))
    right_form = log_sub_exp(F.logsigmoid(-lower), F.logsigmoid(-upper))
    return torch.where(right, right_form, left_form)


class LogisticMixture(Likelihood):
    """The discretized logistic mixture (Salimans et al. 2017): K logistics per dimension on [−1, 1], grey level k
    at c_k = 2k/(L − 1) − 1 gets the mass of [c_k − δ, c_k + δ] with δ = 1/(L − 1); the end bins extend to ∓∞, so
    the L masses sum to 1. Parameters per dimension: K logits, K means, K log-scales (≥ −7)."""

    def __init__(self, levels: int, components: int = 10):
        super().__init__()
        if levels < 2:
            raise ValueError(f"the logistic mixture needs levels >= 2, got {levels}")
        if components < 1:
            raise ValueError(f"the logistic mixture needs components >= 1, got {components}")
        self.levels, self.components = levels, components
        self.num_params = 3 * components

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, loc, log_scale = params.chunk(3, dim=1)  # each (B, K, *event)
        return logits, loc, log_scale.clamp(min=LOG_SCALE_MIN)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits, loc, log_scale = self._split(params)
        k = (x * (self.levels - 1)).round().unsqueeze(1)  # (B, 1, *event)
        half = 1.0 / (self.levels - 1)
        centre = 2 * k / (self.levels - 1) - 1
        inv_scale = torch.exp(-log_scale)
        upper = (centre + half - loc) * inv_scale
        lower = (centre - half - loc) * inv_scale
        log_mass = torch.where(
            k == 0,
            F.logsigmoid(upper),
            torch.where(k == self.levels - 1, F.logsigmoid(-lower), logistic_bin_log_mass(upper, lower)),
        )
        return _sum_event(torch.logsumexp(log_mass + F.log_softmax(logits, dim=1), dim=1))

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        logits, loc, log_scale = self._split(params)
        probs = F.softmax(logits, dim=1).movedim(1, -1)  # (B, *event, K)
        pick = torch.multinomial(probs.reshape(-1, self.components), 1, generator=generator)
        pick = pick.reshape(probs.shape[:-1]).unsqueeze(1)  # (B, 1, *event)
        loc, log_scale = loc.gather(1, pick).squeeze(1), log_scale.gather(1, pick).squeeze(1)
        u = torch.rand(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype).clamp(1e-5, 1 - 1e-5)
        value = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))  # inverse logistic CDF
        k = ((value.clamp(-1, 1) + 1) / 2 * (self.levels - 1)).round()
        return k / (self.levels - 1)

    def mean(self, params: Tensor) -> Tensor:
        logits, loc, _ = self._split(params)
        return ((F.softmax(logits, dim=1) * loc).sum(1).clamp(-1, 1) + 1) / 2


LIKELIHOODS = ("bernoulli", "logistic-mixture", "gaussian")


def build_likelihood(name: str, levels: int | None, components: int = 10, scale: float | None = None) -> Likelihood:
    """The likelihood ``name`` for data with ``levels`` grey levels (None: continuous; 2: binarized). One that does
    not fit the data is refused: the Bernoulli needs binarized data, the logistic mixture grey levels (on binarized
    data it would score another dataset than the one a Bernoulli model is scored on), the Gaussian non-binary data."""
    data = "continuous" if levels is None else "binarized" if levels == 2 else f"{levels} grey levels"
    if name == "bernoulli":
        if levels != 2:
            raise ValueError(f"likelihood 'bernoulli' needs binarized data (data.binarize=true); the data are {data}")
        return Bernoulli()
    if name == "logistic-mixture":
        if levels is None or levels == 2:
            other = "gaussian" if levels is None else "bernoulli"
            raise ValueError(f"likelihood 'logistic-mixture' needs grey-level data; the data are {data}: use {other}")
        return LogisticMixture(levels, components)
    if name == "gaussian":
        if levels == 2:
            raise ValueError(
                "likelihood 'gaussian' needs continuous or grey-level data; the data are binarized: use bernoulli"
            )
        return Gaussian(scale, levels)
    raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {name!r}")
