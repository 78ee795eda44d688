"""What a model family promises, and the pieces model families share.

**Contracts.** Code that uses a model asks what it *is* (``isinstance(model, Density)``), never whether it happens to
have an attribute: a family states its promises by implementing the methods of these protocols, and nothing else
has to know which family it is.

- :class:`Generative`: every model samples.
- :class:`Density`: an exact log-density per example (flows, the Gaussian): NLL, density plots.
- :class:`LatentVariable`: only a lower bound on log p(x) (the ELBO of a VAE or a diffusion model); such a model
  exposes its bound and never a fake ``log_prob``, so nothing reports a bound as an exact likelihood.
- :class:`Game`: several players, each updated on its own loss (GANs).
- :class:`Conditional`: takes a class label; an unconditional model does not have ``num_classes`` at all.
- :class:`Classifier`: predicts labels (log p(y | x, noise)) and samples nothing: guidance classifiers.

**One name for the condition: ``y``.** The conditioning input of ``sample``, ``log_prob`` and ``elbo`` is called
``y``, as in ``Batch(x, y)``: today class labels, shape (B,) int64 in [0, num_classes); later any conditioning
tensor. An unconditional model refuses a ``y`` rather than silently ignore it.

**Sampling options belong to the call.** ``model.sample(n, y=None, generator=None, **how)``: ``how`` (temperature,
sampler, steps, guidance scale, …) says how to draw, not what was trained, so it never enters the config or its hash
and one checkpoint can be sampled and evaluated many ways. A model names the options it understands and rejects any
other with :func:`check_how`; no option given means the model's default sampling.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from genbits.errors import ConfigError
from genbits.registry import closest

# ----------------------------------------------------------------------------------------------------
# Contracts.


@runtime_checkable
class Generative(Protocol):
    """Draws samples: (n, *event_shape), with labels ``y`` (n,) for a conditional model (None: the model's choice).
    ``SAMPLING_OPTIONS`` names the options ``how`` it understands (``genbits list`` shows them)."""

    SAMPLING_OPTIONS: tuple[str, ...]

    def sample(
        self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any
    ) -> Tensor: ...


@runtime_checkable
class Density(Protocol):
    """An exact, normalized log-density: log p(x | y) per example, shape (B,), in nats."""

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class LatentVariable(Protocol):
    """A latent-variable model whose likelihood is intractable: the ELBO, a per-example lower bound on log p(x | y),
    shape (B,), in nats, of x as the dataset gives it (images: the probability of their discrete grey levels, the
    quantity the flows' dequantized NLL bounds too). Whatever scores it must report a bound, not an NLL."""

    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Game(Protocol):
    """Several players, each with its own loss and optimizer: name → module (e.g. generator, discriminator)."""

    def players(self) -> dict[str, nn.Module]: ...


@runtime_checkable
class Conditional(Protocol):
    """Takes class labels ``y`` in [0, num_classes)."""

    num_classes: int


@runtime_checkable
class Classifier(Protocol):
    """Predicts labels instead of generating data: log p(y | x, noise) per example, (B,), in nats, normalized over
    its ``num_classes`` classes. The noise-conditional classifier of classifier guidance is one; it does not sample,
    so it is not ``Generative``: the loop draws no sample plots for it and evaluation draws no samples from it."""

    num_classes: int

    def log_prob_class(self, x: Tensor, noise: Tensor, y: Tensor) -> Tensor: ...


def num_classes_of(model: Any) -> int | None:
    """The number of classes a conditional model takes; None for an unconditional one."""
    return model.num_classes if isinstance(model, Conditional) else None


def device_of(model: nn.Module) -> torch.device:
    """Where a model's tensors live (labels it is given must be there too)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def balanced_labels(n: int, num_classes: int, device: torch.device | str = "cpu") -> Tensor:
    """``arange(n) % num_classes``: every class equally often (±1), interleaved so that any chunk is balanced too;
    evaluation compares with held-out data whose classes are (near) balanced, without multinomial noise."""
    return torch.arange(n, device=device) % num_classes


def refuse_condition(model_name: str, y: Tensor | None) -> None:
    """An unconditional model given labels fails loudly rather than ignore them."""
    if y is not None:
        raise ValueError(f"this {model_name} is unconditional: got a conditioning input y, expected None")


# ----------------------------------------------------------------------------------------------------
# Sampling options.


def check_how(model_name: str, how: Mapping[str, Any], understood: tuple[str, ...]) -> None:
    """Reject a sampling option the model does not understand: an ignored option would pass for a result."""
    for option in how:
        if option not in understood:
            takes = f"it takes: {', '.join(understood)}" if understood else "it takes none"
            raise ConfigError(
                f"sampling option {option!r} is not understood by {model_name} ({takes}){closest(option, understood)}"
            )


def temperature(how: Mapping[str, Any]) -> float:
    """The ``temperature`` option (default 1): the scale T of the base noise, z ~ N(0, T²I) as in Glow."""
    value = how.get("temperature", 1.0)
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 < value < math.inf):
        raise ConfigError(f"sampling option temperature must be a finite number > 0, got {value!r}")
    return float(value)


def how_key(how: Mapping[str, Any]) -> str:
    """The canonical name of a set of sampling options: sorted ``name=value`` pairs (``steps=50,temperature=0.8``)."""
    return ",".join(f"{k}={v}" if isinstance(v, str) else f"{k}={v!r}" for k, v in sorted(how.items()))


# ----------------------------------------------------------------------------------------------------
# Shared maths.


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension: (..., D) → (...)."""
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
