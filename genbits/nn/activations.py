"""Nonlinearities by name: a config names one, and it is resolved here, once, into the builder a network calls
after each layer (a builder, not a module, so every layer gets its own instance)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

Activation = Callable[[], nn.Module]
"""A builder of the nonlinearity a network uses (``nn.SiLU``, ``nn.ReLU``, ...)."""

ActivationName = Literal["relu", "leaky-relu", "elu", "gelu", "silu", "swish", "tanh"]
ACTIVATIONS: dict[str, Activation] = {
    "relu": nn.ReLU,
    "leaky-relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,  # x·sigmoid(x), the diffusion papers' name
    "swish": nn.SiLU,  # the same function under NVAE's name
    "tanh": nn.Tanh,
}


def activation(name: str) -> Activation:
    """The builder called ``name``; an unknown name is refused with the choices."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is unknown; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
