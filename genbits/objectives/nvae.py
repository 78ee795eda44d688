"""NVAE's training loss (Vahdat & Kautz 2020): −ELBO with a warmed-up, balanced KL, plus spectral regularization.

    loss = mean_B [ −reconstruction + β · Σ_g c_g · KL_g ] + model.regularization()

- KL warm-up: β = clamp((t − 10⁻⁴)/w, 10⁻⁴, 1) at training fraction t, w = the model's ``kl_warmup`` (0: β = 1),
  so the decoder learns to use the latents before the KL pushes them to the prior.
- KL balancing, while β < 1 and the model's ``kl_balancing`` is on: c_g ∝ (mean_B |KL_g| + 0.01) / α_g, normalized
  to mean 1 (constants, no gradient), α_g ∝ the group's area: groups that carry more information are pushed
  harder, so no group is switched off early (posterior collapse of whole groups). At β = 1 every c_g = 1, so the
  loss is then exactly −ELBO + regularization.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.models.hvae import HierarchicalVAE
from genbits.objectives.base import Losses, Objective, Progress
from genbits.registry import OBJECTIVES

KL_MIN, KL_CONSTANT = 1e-4, 1e-4  # NVAE's smallest KL weight and the fraction of training it is held there


def kl_weight(progress: Progress, warmup: float) -> float:
    """β at this point of training: NVAE's clamp((t − 10⁻⁴)/warmup, 10⁻⁴, 1); 1 throughout when warmup = 0."""
    if warmup == 0:
        return 1.0
    return min(1.0, max(KL_MIN, (progress.fraction - KL_CONSTANT) / warmup))


def balancing_coefficients(kl: Tensor, alpha: Tensor) -> Tensor:
    """NVAE's KL-balancing coefficients c_g (G,), mean 1, detached, from the per-group KLs ``kl`` (B, G) and the
    groups' prior weights ``alpha`` (G,)."""
    c = kl.detach().abs().mean(0) + 0.01
    c = c / alpha.to(c) * c.sum()
    return c / c.mean()


class NVAELoss(Objective):
    def __call__(self, model: HierarchicalVAE, batch: Batch) -> Losses:
        if not isinstance(model, HierarchicalVAE):
            raise ConfigError(f"objective 'nvae' trains the hvae model, got {type(model).__name__}")
        terms = model.elbo_terms(batch.x)
        reconstruction = terms.pop("reconstruction")
        kl = torch.stack(list(terms.values()), dim=1)  # (B, G), top group first
        beta = kl_weight(self.progress, model.kl_warmup)
        balanced = model.kl_balancing and beta < 1
        coefficients = balancing_coefficients(kl, model.kl_alpha()) if balanced else torch.ones_like(kl[0])
        regularization = model.regularization()
        loss = (beta * (kl * coefficients).sum(1) - reconstruction).mean() + regularization
        elbo = (reconstruction - kl.sum(1)).detach()
        metrics = {"elbo": elbo.mean(), "kl_weight": torch.tensor(beta), "regularization": regularization.detach()}
        metrics |= {name: value.detach().mean() for name, value in terms.items()}
        return Losses({"model": loss}, metrics)


@OBJECTIVES.register("nvae")
def nvae() -> NVAELoss:
    """−ELBO with the model's KL warm-up and balancing, plus its spectral regularization (NVAE's loss)."""
    return NVAELoss()
