"""The training state and its checkpoints: what a checkpoint holds, who writes it, how a run goes back to one.

A checkpoint holds everything the next step depends on — parameters, EMA, optimizer and rule state, the batch
stream's position, every RNG (torch, CUDA, numpy, Python) and the fp16 loss scale — so a run restored from it
continues bit for bit. Anything else a step depends on is a pure function of the step (the LR schedule, the
objective's ``Progress``) and needs no saving.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from genbits.config import TrainConfig
from genbits.errors import ConfigError, NonFiniteLoss, TrainingDiverged
from genbits.optim.field import GradientField
from genbits.optim.rules import UpdateRule
from genbits.train import checkpoint, distributed
from genbits.train.ema import EMA
from genbits.train.rundir import RunDir
from genbits.train.stream import BatchStream
from genbits.train.tensorboard import TensorBoard


def seed_everything(seed: int) -> None:
    """Seed torch and the global numpy and Python generators: a fresh run starts from the same state on every
    machine (numpy's and Python's would otherwise start from OS entropy), and the checkpoints store all three."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@dataclass
class Checkpointer:
    """Saves and restores one run's training state. Rank 0 writes, every process reads; restoring rewinds
    ``metrics.jsonl`` to the restored step, so the steps after it are logged again exactly as before."""

    run: RunDir
    config_hash: str
    keep: int
    model: nn.Module
    ema: EMA
    rule: UpdateRule
    stream: BatchStream
    field: GradientField
    last: Path | None = None  # the newest checkpoint saved or restored: where a NaN rollback returns to

    def save(self, step: int) -> None:
        if distributed.is_main():
            checkpoint.save(self.run.checkpoints, step, self.snapshot(), self.config_hash, self.keep)
        distributed.barrier()  # every process learns the path only once the file is there (a rollback reads it)
        self.last = checkpoint.checkpoint_path(self.run.checkpoints, step)

    def resume(self, steps: int) -> int | None:
        """Restore the newest valid checkpoint; its step, or None when there is none.

        A run already at ``steps`` is left untouched (nothing restored, nothing rewritten); one past it is refused:
        a finished run is never shortened.
        """
        latest = checkpoint.load_latest(self.run.checkpoints, self.config_hash)
        if latest is None:
            return None
        path, step, state = latest
        if step > steps:
            raise ConfigError(
                f"train.steps={steps}: {self.run.path} has already trained {step} steps (checkpoints up to step "
                f"{step}); a finished run cannot be shortened. Use a new --run-dir, or train.steps >= {step}"
            )
        if step < steps:
            self._restore(path, step, state)
        return step

    def restore_last(self) -> int:
        """Go back to the newest checkpoint saved or restored; its step."""
        assert self.last is not None, "nothing saved or restored yet"
        step, state = checkpoint.load(self.last, self.config_hash)
        self._restore(self.last, step, state)
        return step

    def snapshot(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "rule": self.rule.state_dict(),
            "stream": self.stream.state_dict(),
            "rng": rng_state(),
            "loss_scale": self.field.loss_scale,
        }

    def _restore(self, path: Path, step: int, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.rule.load_state_dict(state["rule"])
        self.stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"])
        self.field.loss_scale = float(state["loss_scale"])
        self.last = path
        if distributed.is_main():
            self.run.truncate_metrics(step)


class NanPolicy:
    """``train.on_nan``: stop, naming the last good checkpoint, or roll back to it with every learning rate scaled by
    ``nan_lr_factor`` (at most ``max_rollbacks`` times per call of ``train``; the scale accumulates). A rollback is
    logged as an event in metrics.jsonl, which the restore has rewound to the checkpoint; TensorBoard follows both."""

    def __init__(self, cfg: TrainConfig, checkpoints: Checkpointer, rule: UpdateRule, board: TensorBoard):
        self.cfg, self.checkpoints, self.rule, self.board = cfg, checkpoints, rule, board
        self.rollbacks, self.lr_scale = 0, rule.lr_scale  # the scale a resumed run was checkpointed with

    def on_nan(self, step: int, error: NonFiniteLoss) -> int:
        """The step training continues from after a non-finite loss at ``step + 1``; raises TrainingDiverged
        when the policy is to stop (or no rollback is left)."""
        where = f"{self.checkpoints.last} (step {checkpoint.checkpoint_step(self.checkpoints.last)})"
        if self.cfg.on_nan == "stop" or self.rollbacks >= self.cfg.max_rollbacks:
            raise TrainingDiverged(
                f"step {step + 1}: {error}; stopped. Last good checkpoint: {where}. "
                "Lower optim.lr, clip gradients (optim.grad_clip) or set train.on_nan=rollback."
            ) from None
        self.rollbacks += 1
        self.lr_scale *= self.cfg.nan_lr_factor
        step = self.checkpoints.restore_last()
        self.rule.lr_scale = self.lr_scale
        if distributed.is_main():
            event = {"step": step, "event": "rollback", "lr_scale": self.lr_scale}
            self.checkpoints.run.append_metrics(event)
            self.board.rewind(step)
            self.board.log(event)
            tqdm.write(f"step {step}: non-finite loss ({error}); rolled back to {where}, LR × {self.lr_scale:g}")
        return step
