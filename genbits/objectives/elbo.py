"""Objectives of latent-variable models: the ELBO with its training knobs, and the IWAE bound.

``elbo`` maximizes reconstruction − β_t Σ_g w_g · max(λ, KL_g) from a model's :class:`ElboParts`:

- β_t = β · max(ramp(progress, 0, warmup), warmup_floor): KL warm-up over the first ``warmup`` fraction of training
  (Bowman et al. 2016; Sønderby et al. 2016), NVAE's floor 1e-4 (Vahdat & Kautz 2020) as an option;
- free bits λ nats per latent unit, on the batch-mean KL of that unit (Kingma et al. 2016): below λ a unit's KL is
  not pushed down, so units are not switched off early; a group that does not factorize gets λ for the group;
- KL balancing (NVAE): while β_t < 1, group g's KL is weighted by w_g ∝ (mean KL_g + 0.01)/α_g, α_g its number of
  units, normalized to mean 1 (detached), so groups with little KL are not collapsed while the others grow;
- plus ``model.regularization()`` where the model has one (spectral regularization), added to the loss as is.

The logged ``elbo`` is the plain bound (β = 1, no free bits), comparable across settings. ``iwae`` maximizes
log (1/k) Σ w_i (Burda et al. 2016). Neither dequantizes: the model's likelihood scores data in the dataset's
convention (``nn/likelihoods.py``).
"""

from __future__ import annotations

from torch import Tensor, nn

from genbits.data.base import Batch, SampledDataset, TensorDataset
from genbits.errors import ConfigError
from genbits.models.base import Conditional
from genbits.models.latent import ElboParts, HasElboParts, ImportanceWeighted, Regularized, iwae_bound
from genbits.objectives.base import Losses, Objective, ramp
from genbits.registry import OBJECTIVES


def _condition(model: nn.Module, batch: Batch) -> Tensor | None:
    return batch.y if isinstance(model, Conditional) else None  # labels condition only a model that takes them


def _regularized(model: nn.Module, loss: Tensor, metrics: dict[str, Tensor]) -> Tensor:
    if isinstance(model, Regularized):
        penalty = model.regularization()
        metrics["regularization"] = penalty.detach()
        return loss + penalty
    return loss


def balancing_weights(kl_per_group: dict[str, Tensor], units: dict[str, int]) -> dict[str, Tensor]:
    """NVAE's KL balancing coefficients: w_g ∝ (mean_B KL_g + 0.01)/α_g with α_g the group's units, mean 1."""
    names = list(kl_per_group)
    raw = [(kl_per_group[g].detach().mean() + 0.01) / units[g] for g in names]
    mean = sum(raw) / len(raw)
    return {g: r / mean for g, r in zip(names, raw, strict=True)}


class Elbo(Objective):
    def __init__(
        self,
        beta: float = 1.0,
        warmup: float = 0.0,
        warmup_floor: float = 0.0,
        free_bits: float = 0.0,
        kl_balancing: bool = False,
    ):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if not 0.0 <= warmup <= 1.0:
            raise ValueError(f"warmup must be a fraction of training in [0, 1], got {warmup}")
        if not 0.0 <= warmup_floor <= 1.0:
            raise ValueError(f"warmup_floor must be in [0, 1], got {warmup_floor}")
        if not free_bits >= 0:
            raise ValueError(f"free_bits must be >= 0 nats per latent unit, got {free_bits}")
        self.beta, self.warmup, self.warmup_floor = beta, warmup, warmup_floor
        self.free_bits, self.kl_balancing = free_bits, kl_balancing

    def kl_weight(self) -> float:
        """β_t at the current training progress."""
        return self.beta * max(ramp(self.progress, 0.0, self.warmup), self.warmup_floor)

    def penalized_kl(self, parts: ElboParts) -> dict[str, Tensor]:
        """Each group's batch-mean KL with free bits applied (scalars). Without free bits nothing is clamped: a
        one-sample KL estimate (flow posterior or prior) can be negative and must still pass its gradient."""
        means = {g: kl.mean(0) for g, kl in parts.kl.items()}  # per unit, or a scalar for a group as a whole
        if self.free_bits > 0:
            means = {g: m.clamp(min=self.free_bits) for g, m in means.items()}
        return {g: m.sum() for g, m in means.items()}

    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        if not isinstance(model, HasElboParts):
            raise ConfigError(f"objective 'elbo' needs a latent-variable model; {type(model).__name__} has no ELBO")
        parts = model.elbo_parts(batch.x, _condition(model, batch), batch.noise)
        beta = self.kl_weight()
        kl = self.penalized_kl(parts)
        if self.kl_balancing and beta < 1.0:
            units = {g: (v.shape[1] if v.dim() == 2 else 1) for g, v in parts.kl.items()}
            weights = balancing_weights(parts.kl_per_group(), units)
            kl = {g: weights[g] * v for g, v in kl.items()}
        loss = -parts.reconstruction.mean() + beta * sum(kl.values())
        elbo = parts.elbo().mean().detach()
        metrics = {
            "elbo": elbo,
            "reconstruction": parts.reconstruction.mean().detach(),
            "kl": parts.total_kl().mean().detach(),
            "beta": elbo.new_tensor(beta),
        }
        if len(parts.kl) > 1:
            metrics.update({f"kl/{g}": v.mean().detach() for g, v in parts.kl_per_group().items()})
        return Losses({"model": _regularized(model, loss, metrics)}, metrics)


class Iwae(Objective):
    def __init__(self, k: int = 5):
        if k < 1:
            raise ValueError(f"k (importance samples) must be >= 1, got {k}")
        self.k = k

    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        if not isinstance(model, ImportanceWeighted):
            raise ConfigError(f"objective 'iwae' needs a latent-variable model with an encoder; {type(model).__name__}")
        bound = iwae_bound(model.log_weights(batch.x, _condition(model, batch), self.k, batch.noise)).mean()
        metrics = {"iwae": bound.detach()}
        return Losses({"model": _regularized(model, -bound, metrics)}, metrics)


@OBJECTIVES.register("elbo")
def elbo(
    dataset: SampledDataset | TensorDataset,
    beta: float = 1.0,
    warmup: float = 0.0,
    warmup_floor: float = 0.0,
    free_bits: float = 0.0,
    kl_balancing: bool = False,
) -> Elbo:
    """β-weighted ELBO with KL warm-up over the first ``warmup`` of training, free bits (nats per latent unit) and
    NVAE's KL balancing across latent groups."""
    return Elbo(beta, warmup, warmup_floor, free_bits, kl_balancing)


@OBJECTIVES.register("iwae")
def iwae(dataset: SampledDataset | TensorDataset, k: int = 5) -> Iwae:
    """The importance-weighted bound with k samples per example (k = 1 is the ELBO)."""
    return Iwae(k)
