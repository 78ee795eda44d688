"""Denoising score matching for diffusion models: regress the network's target (ε, x₀ or v) at a random noise level.

Every weighting is a weight on the x₀ error ‖x₀ − x̂₀‖² as a function of SNR = ᾱ/(1 − ᾱ); since ε-MSE = SNR·x₀-MSE
and v-MSE = (SNR + 1)·x₀-MSE, the loss is computed as the MSE of the network's own target times the ratio
(Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", Sec. 3.4):

- ``simple``: the plain MSE of the target (Ho et al. 2020's L_simple for ε-prediction);
- ``snr``: x₀ weight SNR, i.e. ε-MSE whatever the network predicts;
- ``min-snr``: x₀ weight min(SNR, γ) (Hang et al. 2023; γ = 5).

``p_uncond``: each label is replaced by the null class with this probability, so one network learns the conditional
and the unconditional model (classifier-free guidance, Ho & Salimans 2021).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.models.base import num_classes_of
from genbits.models.diffusion import Diffusion, q_sample
from genbits.objectives.base import Losses, Objective
from genbits.registry import OBJECTIVES

Weighting = Literal["simple", "snr", "min-snr"]
TARGET_WEIGHT = {"eps": lambda snr: snr, "x0": lambda snr: torch.ones_like(snr), "v": lambda snr: snr + 1}
"""The x₀-error weight that the plain MSE of each target carries."""


class Denoising(Objective):
    def __init__(self, weighting: Weighting = "simple", gamma: float = 5.0, p_uncond: float = 0.0):
        if not 0 <= p_uncond <= 1:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.weighting, self.gamma, self.p_uncond = weighting, gamma, p_uncond

    def weight(self, snr: Tensor, prediction: str) -> Tensor:
        """Per-example factor on the target's MSE (1 for ``simple``)."""
        if self.weighting == "simple":
            return torch.ones_like(snr)
        wanted = snr if self.weighting == "snr" else snr.clamp(max=self.gamma)
        return wanted / TARGET_WEIGHT[prediction](snr)

    def labels(self, model: Diffusion, y: Tensor | None) -> Tensor | None:
        classes = num_classes_of(model)
        if classes is None:
            return None
        if y is None:
            raise ConfigError("objective denoising: the conditional model needs labels; this dataset has none")
        if self.p_uncond == 0:
            return y
        drop = torch.rand(len(y), device=y.device) < self.p_uncond
        return torch.where(drop, torch.full_like(y, classes), y)

    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        if not isinstance(model, Diffusion):
            raise ConfigError(f"objective 'denoising' needs a diffusion model, not {type(model).__name__}")
        x0 = model.to_model(batch.x)
        t = model.schedule.sample_t(len(x0), x0.device)
        alpha_bar = model.schedule.alpha_bar(t).to(x0.device)
        eps = torch.randn_like(x0)
        x_t = q_sample(x0, alpha_bar, eps)
        a, s = alpha_bar.sqrt().to(x0.dtype), (1 - alpha_bar).sqrt().to(x0.dtype)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        target = {"eps": eps, "x0": x0, "v": a.view(shape) * eps - s.view(shape) * x0}[model.prediction]
        pred = model.predict(x_t, t, self.labels(model, batch.y))
        mse = ((pred - target) ** 2).flatten(1).mean(1)  # (B,)
        weight = self.weight(alpha_bar / (1 - alpha_bar), model.prediction).to(mse.dtype)
        loss = (weight * mse).mean()
        return Losses({"model": loss}, {"mse": mse.mean().detach()})


@OBJECTIVES.register("denoising")
def denoising(weighting: Weighting = "simple", gamma: float = 5.0, p_uncond: float = 0.0) -> Denoising:
    """``weighting``: simple (the target's MSE), snr (ε-MSE), min-snr (min(SNR, ``gamma``) on the x₀ error);
    ``p_uncond``: probability of dropping a label to the null class (classifier-free guidance)."""
    return Denoising(weighting, gamma, p_uncond)
