"""The MLP denoiser for 2-D toys and other flattened data: the UNet's conditioned residual block on vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from genbits.nn.activations import Activation
from genbits.nn.blocks import ResidualBlock
from genbits.nn.embeddings import ConditionEmbedding
from genbits.nn.norms import Norm


class MLPDenoiser(nn.Module):
    """x (B, *shape) flattened → linear → ``depth`` residual blocks of ``width`` units, each conditioned by scale/shift
    from the noise-level (+ class) embedding → norm → activation → linear → (B, *shape).

    The denoiser interface: ``net(x, noise, y)`` with ``noise`` one float per example and ``y`` labels in
    [0, num_classes] (``num_classes`` or None: the learned null class) or None."""

    def __init__(
        self,
        shape: Sequence[int],
        width: int = 128,
        depth: int = 3,
        num_classes: int | None = None,
        norm: Norm | None = None,
        activation: Activation = nn.SiLU,
        dropout: float = 0.0,
        embedding: int | None = None,
    ):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError("width and depth must be >= 1")
        norm = norm or Norm.named("layer")
        self.shape = tuple(shape)
        if num_classes:
            self.num_classes = num_classes
        features = int(torch.Size(self.shape).numel())
        emb = embedding or 4 * width
        self.embed = ConditionEmbedding(width, emb, num_classes, activation)
        self.input = norm.weight(nn.Linear(features, width))
        self.blocks = nn.ModuleList(
            ResidualBlock(width, width, emb, norm, activation, dropout, spatial=False) for _ in range(depth)
        )
        self.head = nn.Sequential(norm.activation(width, False), activation(), norm.weight(nn.Linear(width, features)))

    def forward(self, x: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.embed(noise, y)  # (B, emb)
        h = self.input(x.flatten(1))  # (B, D) → (B, width)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h).view(len(x), *self.shape)  # (B, width) → (B, *shape)
