"""The noise-conditional classifier of classifier guidance (Dhariwal & Nichol 2021, "Diffusion models beat GANs on
image synthesis", Sec. 4): p(y | x_t, t), trained on images noised by a diffusion schedule with the noise level as an
input, so that ∇_{x_t} log p(y | x_t) can steer a sampler at every step. Its body is the UNet's way down (residual
blocks conditioned on the noise level, attention), then norm → activation → global average pooling → linear.

It predicts labels and generates nothing: it is a :class:`~genbits.models.base.Classifier`, not ``Generative``.
The schedule it was trained with travels with it (``schedule``), as does the data convention (images in [−1, 1],
as inside the diffusion model), so a sampler gives it the x_t and the noise input it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from genbits.models.diffusion import Schedule, parse_schedule
from genbits.nn.activations import ActivationName
from genbits.nn.activations import activation as named_activation
from genbits.nn.norms import Norm, NormName
from genbits.nn.unet import Encoder
from genbits.registry import MODELS


class NoisyClassifier(nn.Module):
    """logits = head(encoder(x_t, noise)): (B, C, H, W), (B,) → (B, num_classes)."""

    def __init__(self, encoder: Encoder, schedule: Schedule, num_classes: int, norm: Norm, activation: type):
        super().__init__()
        self.encoder, self.schedule, self.num_classes = encoder, schedule, num_classes
        channels = encoder.out_channels
        self.head = nn.Sequential(norm.activation(channels, True), activation(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = norm.weight(nn.Linear(channels, num_classes))

    @staticmethod
    def to_model(x: Tensor) -> Tensor:
        """Images from data space [0, 1] to the diffusion model's [−1, 1]."""
        return x * 2 - 1

    def forward(self, x_t: Tensor, noise: Tensor) -> Tensor:
        h, _, _ = self.encoder.encode(x_t, noise, None)  # (B, C', h, w)
        return self.out(self.head(h))  # (B, C') → (B, num_classes)

    def log_prob_class(self, x_t: Tensor, noise: Tensor, y: Tensor) -> Tensor:
        """log p(y | x_t) per example, (B,), in nats; normalized over the classes."""
        return F.log_softmax(self(x_t, noise), dim=-1).gather(1, y[:, None]).squeeze(1)


@MODELS.register("noisy-classifier")
def noisy_classifier(
    event_shape: tuple[int, ...],
    num_classes: int | None = None,
    dataset: Any = None,
    schedule: Literal["linear", "cosine", "table", "sigma"] = "linear",
    steps: int = 1000,
    schedule_options: dict | None = None,
    channels: int = 32,
    multipliers: Sequence[int] = (1, 2, 2),
    num_res_blocks: int = 1,
    attention: list[int] | None = None,
    dropout: float = 0.0,
    head_dim: int = 32,
    norm: NormName = "group",
    activation: ActivationName = "silu",
) -> NoisyClassifier:
    """A classifier of noisy images x_t (the schedule must be the guided diffusion model's: ``schedule``, ``steps``
    and ``schedule_options`` as in the ``diffusion`` model). The body is a UNet encoder (``channels`` ×
    ``multipliers``, ``num_res_blocks`` per level, attention at the resolutions in ``attention``, default the
    deepest)."""
    if not num_classes:
        raise ValueError("the dataset has no labels to classify")
    if len(event_shape) != 3:
        raise ValueError(f"it classifies images (C, H, W); the data have shape {tuple(event_shape)}")
    try:
        sched = parse_schedule(schedule, steps, dict(schedule_options or {}))
    except TypeError as e:
        raise ValueError(f"schedule_options: {e}") from None
    norms, act = Norm.named(norm), named_activation(activation)
    encoder = Encoder(
        event_shape,
        channels=channels,
        multipliers=multipliers,
        num_res_blocks=num_res_blocks,
        attention=attention,
        norm=norms,
        activation=act,
        dropout=dropout,
        head_dim=head_dim,
    )
    return NoisyClassifier(encoder, sched, num_classes, norms, act)
