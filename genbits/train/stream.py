"""A resumable, process-sharded stream of batches: batch k depends only on (seed, k), never on history.

Every process draws the same global batch order and keeps its own slice, so N processes with batch B/N see exactly
the batches one process with batch B would see; resuming needs only the position k. Each batch carries
:class:`ExampleNoise`, so a model's own randomness (a VAE's reparameterization noise) splits the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from genbits.data.base import Batch, SampledDataset, TensorDataset
from genbits.errors import ConfigError


def seeded_generator(*keys: int) -> torch.Generator:
    """A torch generator seeded from a tuple of integers (well mixed, so nearby keys give unrelated streams)."""
    seed = int(np.random.SeedSequence([k & 0xFFFFFFFF for k in keys]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class ExampleNoise:
    """Standard normal noise per example that does not depend on how a batch is split over processes or
    micro-batches: every draw is made for the whole global batch from a generator keyed by (``keys``, draw), and a
    (micro-)batch keeps its own examples' rows. Cheap (latents are small) and free of the global RNG's history."""

    keys: tuple[int, ...]
    size: int  # examples in the global batch
    rows: Tensor  # (B,) int64: where this batch's examples sit in it

    def normal(
        self,
        shape: Sequence[int],
        draw: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """(B, *shape) standard normals; ``draw`` numbers a batch's independent draws (one per latent group, say)."""
        full = torch.randn(self.size, *shape, generator=seeded_generator(*self.keys, draw), dtype=dtype)
        return (full if len(self.rows) == self.size else full[self.rows]).to(device)

    def __getitem__(self, index: slice | Tensor) -> ExampleNoise:
        return ExampleNoise(self.keys, self.size, self.rows[index])


class BatchStream:
    def __init__(
        self,
        dataset: SampledDataset | TensorDataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ):
        if batch_size % world:
            raise ConfigError(f"train.batch_size: {batch_size} is not divisible by the {world} processes")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world, self.device, self.dtype = rank, world, device, dtype
        self.position = 0
        self._epoch_order: tuple[int, torch.Tensor] | None = None

    def __next__(self) -> Batch:
        k, self.position = self.position, self.position + 1
        batch = self.global_batch(k)
        share = self.batch_size // self.world
        mine = batch[self.rank * share : (self.rank + 1) * share]
        rows = torch.arange(self.rank * share, (self.rank + 1) * share)
        return Batch(
            mine.x.to(self.device, self.dtype if mine.x.is_floating_point() else None),
            None if mine.y is None else mine.y.to(self.device),
            ExampleNoise((self.seed, k, 3), self.batch_size, rows),
        )

    def __iter__(self) -> BatchStream:
        return self

    def global_batch(self, k: int) -> Batch:
        if isinstance(self.dataset, SampledDataset):
            return self.dataset.sample(self.batch_size, seeded_generator(self.seed, k))
        n = len(self.dataset)
        start, stop = k * self.batch_size, (k + 1) * self.batch_size
        # only the batch's slice of each epoch it spans: copying a whole epoch's order (a text corpus has an example
        # per character, millions) every step cost milliseconds
        parts = [
            self._order(e)[max(start - e * n, 0) : min(stop - e * n, n)] for e in range(start // n, (stop - 1) // n + 1)
        ]
        index = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self.dataset.get(index, seeded_generator(self.seed, k, 2))

    def _order(self, epoch: int) -> torch.Tensor:
        """The shuffled order of one epoch (cached: consecutive batches mostly share it)."""
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            order = torch.randperm(len(self.dataset), generator=seeded_generator(self.seed, epoch, 1))
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])
