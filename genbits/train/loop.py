"""The one training loop: batch → losses → update rule → EMA → log → samples / checkpoints.

Every family runs through ``train``; what differs between them lives in the model, the objective and the update
rule. A run directory that already holds a run is resumed from its newest valid checkpoint and continues exactly
as if it had never stopped.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genbits.config import Config
from genbits.errors import ConfigError, NonFiniteLoss, TrainingDiverged
from genbits.metrics.dynamics import Dynamics
from genbits.objectives.base import players_of
from genbits.optim.field import GradientField
from genbits.optim.rules import Batches, lr_factor
from genbits.registry import RULES
from genbits.train import checkpoint, distributed
from genbits.train.ema import EMA
from genbits.train.parts import build_parts, resolve_device
from genbits.train.rundir import RunDir
from genbits.train.stream import BatchStream, seeded_generator


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted_by: int | None = None  # the signal number that stopped the run early, if any
    last: dict[str, float] | None = None  # the last logged metrics
    already_finished: bool = False  # the run had reached train.steps before this call: nothing was trained


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop checkpoints at the end of the current step and returns."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.signum = signum


@contextmanager
def catching_signals() -> Iterator[StopRequest]:
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def seed_everything(seed: int) -> None:
    """Seed torch and the global numpy and Python generators: a fresh run starts from the same state on every
    machine (numpy's and Python's would otherwise start from OS entropy), and the checkpoints store all three."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def train(config: Config, run_dir: str | Path, progress: bool = True) -> TrainResult:
    """Train (or resume) the run in ``run_dir``; returns where it stopped."""
    cfg = config.train
    device = resolve_device(cfg.device)
    distributed.init_from_env(device)
    rank, world, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = RunDir(run_dir)
    resuming = run.exists()
    if resuming:
        run.check_compatible(config)

    seed_everything(cfg.seed)
    parts = build_parts(config, device)
    model, dataset = parts.model, parts.dataset
    model.train()
    players = players_of(model)
    field = GradientField(model, parts.objective, players, cfg.precision, device)
    rule = RULES.build(
        config.optim.rule.name,
        config.optim.rule.options,
        where="optim.rule",
        players=players,
        optim=config.optim,
        field=field,
    )
    if cfg.diagnostics:
        rule.dynamics = Dynamics(players)
    stream = BatchStream(dataset, cfg.batch_size, cfg.seed, rank, world, device)
    ema = EMA(model, cfg.ema_decay)
    config_hash = config.hash()

    def snapshot() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "rule": rule.state_dict(),
            "stream": stream.state_dict(),
            "rng": rng_state(),
            "loss_scale": field.loss_scale,
        }

    def restore(state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        rule.load_state_dict(state["rule"])
        stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"])
        field.loss_scale = float(state["loss_scale"])

    def save(step: int) -> Path:
        """Rank 0 writes; every process learns the path (a rollback reads it back)."""
        if main:
            checkpoint.save(run.checkpoints, step, snapshot(), config_hash, cfg.keep_checkpoints)
        distributed.barrier()
        return checkpoint.checkpoint_path(run.checkpoints, step)

    latest = checkpoint.load_latest(run.checkpoints, config_hash) if resuming else None
    if latest is not None:
        last_path, step, state = latest
        if step > cfg.steps:
            raise ConfigError(
                f"train.steps={cfg.steps}: {run.path} has already trained {step} steps (checkpoints up to step "
                f"{step}); a finished run cannot be shortened. Use a new --run-dir, or train.steps >= {step}"
            )
        if step == cfg.steps:
            return TrainResult(run.path, step, last=(run.metrics() or [None])[-1], already_finished=True)
        restore(state)
        if main:
            run.truncate_metrics(step)
            run.write_config(config)  # train.steps may have been raised
    else:
        step = 0
        initialize(model, parts.objective, dataset, cfg.seed, device)
        distributed.broadcast_module(model)
        ema.reset(model)
        if main:
            run.create(config)
        last_path = save(0)

    rollbacks, lr_scale = 0, rule.lr_scale
    record: dict[str, float] | None = None
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and main), desc=run.path.name, dynamic_ncols=True)
    with catching_signals() as stop:
        while step < cfg.steps:
            rule.set_lr_factor(lr_factor(config.optim, step, cfg.steps))
            batches = Batches(next(stream), lambda: next(stream))
            logged = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
            if rule.dynamics:
                rule.dynamics.active = logged
            try:
                out = rule.step(batches)
            except NonFiniteLoss as e:
                where = f"{last_path} (step {checkpoint_step(last_path)})"
                if cfg.on_nan == "stop" or rollbacks >= cfg.max_rollbacks:
                    bar.close()
                    raise TrainingDiverged(
                        f"step {step + 1}: {e}; stopped. Last good checkpoint: {where}. "
                        "Lower optim.lr, clip gradients (optim.grad_clip) or set train.on_nan=rollback."
                    ) from None
                rollbacks += 1
                lr_scale *= cfg.nan_lr_factor
                step, state = checkpoint.load(last_path, config_hash)
                restore(state)
                rule.lr_scale = lr_scale
                bar.n = step
                if main:
                    run.truncate_metrics(step)
                    run.append_metrics({"step": step, "event": "rollback", "lr_scale": lr_scale})
                    tqdm.write(f"step {step}: non-finite loss ({e}); rolled back to {where}, LR × {lr_scale:g}")
                continue
            ema.update(model)
            step += 1
            bar.update(1)
            if logged:
                scalars = out.scalars() | (rule.dynamics.collect() if rule.dynamics else {})
                record = log_record(scalars, step, cfg.batch_size, rule, time.perf_counter() - start)
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k.startswith("loss")})
                if main:
                    run.append_metrics(record)
            if main and (step == cfg.steps or (cfg.sample_every and step % cfg.sample_every == 0)):
                save_samples(
                    model,
                    ema,
                    dataset,
                    run.samples / f"step-{step:07d}.png",
                    seeded_generator(cfg.seed, step, 7),
                )
            stopping = distributed.any_process(stop.signum is not None)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                last_path = save(step)
            if stopping:
                break
    bar.close()
    distributed.barrier()
    return TrainResult(run.path, step, stop.signum, record)


def checkpoint_step(path: Path) -> int:
    return int(checkpoint.NAME.match(path.name).group(1))


def log_record(scalars: dict[str, float], step: int, batch_size: int, rule, elapsed: float) -> dict[str, float]:
    """One metrics.jsonl line: losses and metrics averaged over processes, LR, samples seen, wall time."""
    values = torch.tensor(list(scalars.values()), dtype=torch.float64)
    distributed.all_reduce_mean([values])
    record: dict[str, Any] = {"step": step, "samples": step * batch_size}
    record.update(zip(scalars, values.tolist(), strict=True))
    for name, opt in rule.optimizers.items():
        record["lr" if len(rule.optimizers) == 1 else f"lr/{name}"] = opt.param_groups[0]["lr"]
    record["time"] = round(elapsed, 3)
    return record


@torch.no_grad()
def initialize(model: torch.nn.Module, objective, dataset, seed: int, device: torch.device) -> None:
    """Run the objective once on a dedicated batch so data-dependent inits (ActNorm, BN) happen before step 0."""
    batch = BatchStream(dataset, min(512, len(dataset) if hasattr(dataset, "__len__") else 512), seed + 1)
    objective(model, next(batch).to(device))


def save_samples(model, ema: EMA, dataset, path: Path, generator: torch.Generator) -> None:
    """A sample plot with the EMA weights and its own generator, so training's random stream is untouched."""
    from genbits.plots import plot_samples

    was_training = model.training
    model.eval()
    try:
        with ema.swapped_in(model):
            plot_samples(model, dataset, path, generator)
    finally:
        model.train(was_training)
