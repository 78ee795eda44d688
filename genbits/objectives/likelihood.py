"""Divergences estimated from log-densities: forward KL (maximum likelihood) and reverse KL to a known target."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genbits.data.base import Batch, SampledDataset, TensorDataset, dequantize
from genbits.data.text import TextDataset
from genbits.errors import ConfigError
from genbits.metrics.likelihood import bits_per_dim
from genbits.models.base import Conditional, Density, Discrete
from genbits.objectives.base import Losses
from genbits.registry import OBJECTIVES


def likelihood_input(model: nn.Module, x: Tensor, levels: int | None, generator: torch.Generator | None = None):
    """What a density model scores: on images (``levels`` grey levels) a continuous density gets uniformly dequantized
    values, or its likelihood would grow without bound on the lattice; a :class:`Discrete` model gets the levels
    themselves, and must have been built for the data's levels."""
    if isinstance(model, Discrete):
        if model.levels != levels:
            data = "continuous data" if levels is None else f"data with {levels} levels"
            raise ConfigError(
                f"model: {type(model).__name__} is a distribution on {model.levels} levels, not on {data}"
            )
        return x
    return x if levels is None else dequantize(x, levels, generator)


class MaximumLikelihood:
    """Forward KL(p* ‖ p_θ) up to the data entropy: minimize −E_{p*} log p_θ(x) from data samples (mass-covering),
    on what :func:`likelihood_input` says the model scores. On text the model's log_prob is the exact likelihood of a
    block of ``chars`` characters, also logged in bits per character."""

    def __init__(self, levels: int | None = None, chars: int | None = None):
        self.levels, self.chars = levels, chars

    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        if not isinstance(model, Density):
            raise ConfigError(f"objective 'likelihood' needs a density model; {type(model).__name__} has no log_prob")
        x = likelihood_input(model, batch.x, self.levels)
        y = batch.y if isinstance(model, Conditional) else None  # labels condition only a model that takes them
        nll = -model.log_prob(x, y).mean()
        metrics = {"nll": nll.detach()}
        if self.chars is not None:
            metrics["bits_per_char"] = bits_per_dim(nll.detach(), self.chars)
        return Losses({"model": nll}, metrics)


class ReverseKL:
    """Reverse KL(p_θ ‖ p*) = E_{p_θ}[log p_θ(x) − log p*(x)] from reparameterized model samples (mode-seeking).

    Needs the target's log-density (unnormalized is fine: the constant shifts the loss, not the gradient) and a
    model with ``rsample_and_log_prob``. The data batch is used only for its size.
    """

    def __init__(self, dataset: SampledDataset, samples: int = 0):
        if not dataset.has_log_prob:
            raise ValueError(f"reverse KL needs a dataset with a known density; {type(dataset).__name__} has none")
        if samples < 0:
            raise ValueError(f"samples must be >= 0 (0 uses the batch size), got {samples}")
        self.target, self.samples = dataset, samples

    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        x, log_q = model.rsample_and_log_prob(self.samples or len(batch))
        kl = (log_q - self.target.log_prob(x)).mean()
        return Losses({"model": kl}, {"reverse_kl": kl.detach()})


@OBJECTIVES.register("likelihood")
def likelihood(dataset: SampledDataset | TensorDataset | TextDataset) -> MaximumLikelihood:
    return MaximumLikelihood(dataset.levels, dataset.block_size if isinstance(dataset, TextDataset) else None)


@OBJECTIVES.register("reverse-kl")
def reverse_kl(dataset: SampledDataset, samples: int = 0) -> ReverseKL:
    return ReverseKL(dataset, samples)
