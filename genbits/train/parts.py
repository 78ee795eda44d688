"""Build a run's components from its config: dataset, model and objective (shared by train, eval and load_run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genbits.config import Config
from genbits.data import build_dataset
from genbits.errors import ConfigError
from genbits.registry import MODELS, OBJECTIVES


@dataclass
class Parts:
    dataset: Any
    model: nn.Module
    objective: Any
    dtype: torch.dtype | None = None  # what batches are cast to: float64 under train.precision=fp64, else as drawn


def build_parts(config: Config, device: torch.device | str = "cpu", split: str = "train") -> Parts:
    """The dataset, the model on ``device`` (in float64 under ``train.precision=fp64``) and the objective."""
    dtype = torch.float64 if config.train.precision == "fp64" else None
    dataset = build_dataset(config.data.name, config.data.options, split=split, seed=config.train.seed)
    model = MODELS.build(
        config.model.name,
        config.model.options,
        where="model",
        event_shape=dataset.event_shape,
        num_classes=dataset.num_classes,
        dataset=dataset,
    ).to(device=device, dtype=dtype)
    objective = OBJECTIVES.build(config.objective.name, config.objective.options, where="objective", dataset=dataset)
    return Parts(dataset, model, objective, dtype)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; under torchrun each process takes its LOCAL_RANK's GPU."""
    from genbits.train.distributed import local_rank

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' was asked for but no CUDA device is visible; use cpu or auto")
        return torch.device("cuda", local_rank())
    return torch.device(name)
