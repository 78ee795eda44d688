"""Divergences estimated from log-densities: forward KL (maximum likelihood) and reverse KL to a known target."""

from __future__ import annotations

from torch import nn

from genbits.data.base import Batch, SampledDataset, TensorDataset, dequantize
from genbits.data.text import TextDataset
from genbits.errors import ConfigError
from genbits.metrics.likelihood import bits_per_dim
from genbits.models.base import Conditional, Density
from genbits.objectives.base import Losses
from genbits.registry import OBJECTIVES


class MaximumLikelihood:
    """Forward KL(p* ‖ p_θ) up to the data entropy: minimize −E_{p*} log p_θ(x) from data samples (mass-covering).

    On discrete data (images with ``levels`` grey levels) a continuous density is fitted to uniformly dequantized
    values, or its likelihood would grow without bound on the lattice. On text the model's log_prob is the exact
    likelihood of a block of ``chars`` characters, also logged in bits per character.
    """

    def __init__(self, levels: int | None = None, chars: int | None = None):
        self.levels, self.chars = levels, chars

    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        if not isinstance(model, Density):
            raise ConfigError(f"objective 'likelihood' needs a density model; {type(model).__name__} has no log_prob")
        x = batch.x if self.levels is None else dequantize(batch.x, self.levels)
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
