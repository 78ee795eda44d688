"""Checks several test files make the same way: a run's newest checkpoint, and two saved states bit-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genbits.train import checkpoint


def final_state(run_dir: str | Path) -> dict[str, Any]:
    """The state saved in the newest readable checkpoint of ``run_dir``."""
    return checkpoint.load_latest(Path(run_dir) / "checkpoints")[2]


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Every saved tensor (parameters, EMA, optimizer, batch stream, every RNG) and every saved value is identical."""
    tensors_a, tensors_b = {}, {}
    skeleton_a, skeleton_b = checkpoint.flatten(a, tensors_a), checkpoint.flatten(b, tensors_b)
    assert tensors_a.keys() == tensors_b.keys()
    assert [k for k in tensors_a if not torch.equal(tensors_a[k], tensors_b[k])] == []
    assert skeleton_a == skeleton_b
