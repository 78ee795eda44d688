"""Training the noise-conditional classifier of classifier guidance (Dhariwal & Nichol 2021): noise a real image
with the classifier's diffusion schedule at a random time (x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε, the same forward process
and time distribution the denoiser is trained on), and apply cross-entropy to its label."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.models.classifier import NoisyClassifier
from genbits.models.diffusion import q_sample
from genbits.objectives.base import Losses, Objective
from genbits.registry import OBJECTIVES


class NoisyClassification(Objective):
    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        if not isinstance(model, NoisyClassifier):
            raise ConfigError(f"objective 'noisy-classification' needs a noisy-classifier, not {type(model).__name__}")
        if batch.y is None:
            raise ConfigError("objective noisy-classification: the dataset has no labels")
        x0 = model.to_model(batch.x)
        t = model.schedule.sample_t(len(x0), x0.device)
        alpha_bar = model.schedule.alpha_bar(t).to(x0.device)
        x_t = q_sample(x0, alpha_bar, torch.randn_like(x0))
        noise = model.schedule.noise_input(t).to(x0.device, x0.dtype)
        logits = model(x_t, noise)  # (B, K)
        loss = F.cross_entropy(logits, batch.y)
        accuracy = (logits.argmax(-1) == batch.y).float().mean()
        return Losses({"model": loss}, {"accuracy": accuracy.detach()})


@OBJECTIVES.register("noisy-classification")
def noisy_classification() -> NoisyClassification:
    """Cross-entropy of a noisy-classifier on real images noised by its schedule at uniformly drawn times."""
    return NoisyClassification()
