"""Where an experiment's runs train: ``genbits experiment NAME --device cpu|cuda|auto --workers N``.

An experiment module may declare ``DEVICES`` (default: cpu and cuda) when some device makes no sense for it (the
Dirac-GAN and the divergence lab are float64 work on a few hundred numbers, where a GPU adds only launch latency),
and ``POOLED = True`` when it trains several runs at a time; only those take ``--workers``. On a GPU the pooled
experiments run one process at a time unless told otherwise: one CUDA context per core would exhaust the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from genbits.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """The resolved device ("cpu" or "cuda") and the runs at a time asked for (None: the experiment's default)."""

    device: str = "cpu"
    workers: int | None = None

    def overrides(self) -> list[str]:
        """Config overrides that put a run on this device."""
        return [f"train.device={self.device}"]

    def pool(self, cpu_default: int) -> int:
        """Runs at a time: as asked, else one on a GPU and the experiment's default on a CPU."""
        return self.workers or (1 if self.device == "cuda" else cpu_default)


def place(name: str, module: ModuleType, device: str, workers: int | None) -> Placement:
    """Check ``--device`` and ``--workers`` against what experiment ``name`` supports and what this machine has."""
    supported = getattr(module, "DEVICES", ("cpu", "cuda"))
    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda and "cuda" in supported else "cpu"
    if device not in supported:
        raise ConfigError(f"--device {device}: {name} runs on {' or '.join(supported)} only; {module.DEVICES_WHY}")
    if device == "cuda" and not cuda:
        raise ConfigError("--device cuda: no CUDA device is visible here; use --device cpu or auto")
    if workers is not None and not getattr(module, "POOLED", False):
        raise ConfigError(f"--workers: {name} trains one run at a time; drop --workers")
    return Placement(device, workers)


ON_CPU = Placement()  # the default of every experiment's run(): one CPU process per run, the experiment's pool
