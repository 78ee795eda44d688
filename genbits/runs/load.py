"""The Python API over a run directory: ``load_run`` mirrors what the CLI reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genbits.config import Config
from genbits.errors import GenbitsError
from genbits.train import checkpoint
from genbits.train.ema import EMA
from genbits.train.parts import build_parts
from genbits.train.rundir import RunDir


@dataclass
class Run:
    """A trained run: its config, the model (EMA weights unless asked otherwise), dataset and logged metrics."""

    path: Path
    config: Config
    model: nn.Module
    dataset: Any
    step: int
    metrics: list[dict[str, Any]]


def load_run(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> Run:
    """Load the newest valid checkpoint of ``run_dir``; the model is in eval mode on ``device``."""
    run = RunDir(run_dir)
    run.require()
    config = run.stored_config()
    latest = checkpoint.load_latest(run.checkpoints, config.hash())
    if latest is None:
        raise GenbitsError(f"{run.path} has no readable checkpoint yet")
    _, step, state = latest
    parts = build_parts(config, device)
    model = parts.model
    model.load_state_dict(state["model"])
    if ema:
        average = EMA(model, config.train.ema_decay)
        average.load_state_dict(state["ema"])
        EMA._copy(model, average.shadow)
    model.eval()
    return Run(run.path, config, model, parts.dataset, step, run.metrics())
