"""What latent-variable models (the VAE, the hierarchical VAE) share with their objectives and evaluation.

A latent model's ELBO, log p(x) ≥ E_q[log p(x | z)] − KL(q(z | x) ‖ p(z)), is handed over in parts
(:class:`ElboParts`): the reconstruction term and the KL of every latent group, per latent unit where the model can
factorize it. The objective (``objectives/elbo.py``) combines them with β, KL warm-up, free bits and KL balancing;
evaluation reports them. Importance weighting (IWAE bound, importance-sampled NLL) needs only
``log_weights(x, y, k)``: k draws of log p(x, z) − log q(z | x). Both take the batch's per-example ``noise`` (the
training stream's, ``train/stream.py``) for their posterior draws, so that DDP shards train as one process. A model
with a training-only penalty (spectral regularization) offers ``regularization()``, which the objective adds to the
loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from genbits.train.stream import ExampleNoise

LOG_2PI = math.log(2 * math.pi)


@dataclass
class ElboParts:
    """The ELBO of a batch in parts, nats: ``reconstruction`` E_q log p(x | z) as one Monte Carlo draw, (B,); ``kl``
    maps each latent group to its KL(q ‖ p), (B, units) per latent unit or (B,) when it does not factorize (a flow
    posterior or prior: then a one-sample estimate log q(z) − log p(z)). ELBO = reconstruction − Σ KL."""

    reconstruction: Tensor
    kl: dict[str, Tensor]

    def kl_per_group(self) -> dict[str, Tensor]:
        """Each group's KL summed over its units, (B,)."""
        return {name: kl if kl.dim() == 1 else kl.sum(1) for name, kl in self.kl.items()}

    def total_kl(self) -> Tensor:
        return torch.stack(list(self.kl_per_group().values())).sum(0)

    def elbo(self) -> Tensor:
        return self.reconstruction - self.total_kl()

    def terms(self) -> dict[str, Tensor]:
        """What ``elbo_terms`` reports: losses in nats, (B,) each, that sum to −ELBO (as a diffusion model's L_T, L_t,
        L_0 do): ``reconstruction`` −log p(x | z) and ``kl/<group>`` each group's KL."""
        return {"reconstruction": -self.reconstruction, **{f"kl/{k}": v for k, v in self.kl_per_group().items()}}


@runtime_checkable
class HasElboParts(Protocol):
    """A latent model whose ELBO comes in parts (what the ``elbo`` objective trains)."""

    def elbo_parts(self, x: Tensor, y: Tensor | None = None, noise: ExampleNoise | None = None) -> ElboParts: ...


@runtime_checkable
class ImportanceWeighted(Protocol):
    """A latent model with an encoder: log w_i = log p(x, z_i) − log q(z_i | x), z_i ~ q(z | x), (k, B)."""

    def log_weights(
        self, x: Tensor, y: Tensor | None = None, k: int = 1, noise: ExampleNoise | None = None
    ) -> Tensor: ...


@runtime_checkable
class Encodes(Protocol):
    """A latent model with one latent vector per example: its posterior mean E_q[z | x], (B, units) (active units),
    and a reconstruction E[x | z = E_q[z | x]], (B, *event) (what reports show beside the data)."""

    def posterior_mean(self, x: Tensor) -> Tensor: ...

    def reconstruct(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class Regularized(Protocol):
    """A model with a training penalty (a scalar, already weighted) that its objective adds to the loss."""

    def regularization(self) -> Tensor: ...


def soft_clamp(v: Tensor, bound: float) -> Tensor:
    """bound·tanh(v/bound): the identity near 0, smooth, never past ±bound (NVAE's soft clamp)."""
    return bound * torch.tanh(v / bound)


def diagonal_normal_log_prob(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """log N(z; loc, diag(exp(log_scale))²) per unit (no sum): (..., D)."""
    u = (z - loc) * torch.exp(-log_scale)
    return -0.5 * u * u - log_scale - 0.5 * LOG_2PI


def kl_diagonal_normals(loc_q: Tensor, log_scale_q: Tensor, loc_p: Tensor, log_scale_p: Tensor) -> Tensor:
    """KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) per unit, closed form: log σ_p/σ_q + (σ_q² + (μ_q − μ_p)²)/(2σ_p²) − ½."""
    ratio = torch.exp(2 * (log_scale_q - log_scale_p))
    return log_scale_p - log_scale_q + 0.5 * (ratio + ((loc_q - loc_p) * torch.exp(-log_scale_p)) ** 2) - 0.5


def iwae_bound(log_weights: Tensor) -> Tensor:
    """log (1/k) Σ_i w_i over the first axis (Burda et al. 2016): (k, B) → (B,); k = 1 is the ELBO."""
    return torch.logsumexp(log_weights, 0) - math.log(log_weights.shape[0])
