"""The one training loop: batch → losses → update rule → EMA → log → samples / checkpoints.

Every family runs through ``train``; what differs between them lives in the model, the objective and the update
rule. A run directory that already holds a run is resumed from its newest valid checkpoint and continues exactly
as if it had never stopped (``train/state.py``: what a checkpoint holds, the NaN policy). Before each step a
progress-aware objective (``objectives.base.Objective``) is told ``Progress(step, train.steps)``. The exceptions
that keep loops of their own: the feature-classifier trainer (``metrics/feature_training.py``, a fixed supervised
recipe whose product is a weights file, not a run) and the Dirac-GAN's trajectories (a rule's raw steps, recorded).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genbits.config import Config, TrainConfig
from genbits.errors import NonFiniteLoss
from genbits.metrics.dynamics import Dynamics
from genbits.models.base import Generative
from genbits.objectives.base import Objective, Progress, players_of
from genbits.optim.field import GradientField
from genbits.optim.rules import Batches, lr_factor
from genbits.registry import RULES
from genbits.train import distributed
from genbits.train.ema import EMA
from genbits.train.parts import build_parts, resolve_device
from genbits.train.rundir import RunDir
from genbits.train.state import Checkpointer, NanPolicy, seed_everything
from genbits.train.stream import BatchStream, seeded_generator
from genbits.train.tensorboard import TensorBoard


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


def train(config: Config, run_dir: str | Path, progress: bool = True) -> TrainResult:
    """Train (or resume) the run in ``run_dir``; returns where it stopped."""
    cfg = config.train  # set up: devices, processes, the parts, the rule, the stream, EMA, checkpoints
    device = resolve_device(cfg.device)
    distributed.init_from_env(device)
    main = distributed.is_main()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = RunDir(run_dir)
    board = TensorBoard(run.tensorboard, cfg.tensorboard, writes=main)  # a missing package fails here, unwritten
    resuming = run.exists()
    observed = run.check_compatible(config) if resuming else []

    seed_everything(cfg.seed)
    parts = build_parts(config, device)
    model, objective, dataset = parts.model, parts.objective, parts.dataset
    model.train()
    if cfg.compile:
        model.compile()  # compiles the module's forward in place: parameter names and checkpoints are unchanged
    players = players_of(model)
    field = GradientField(model, objective, players, cfg.precision, device, cfg.accumulate)
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
    stream = BatchStream(
        dataset, cfg.batch_size, cfg.seed, distributed.rank(), distributed.world_size(), device, parts.dtype
    )
    ema = EMA(model, cfg.ema_decay)
    checkpoints = Checkpointer(run, config.hash(), cfg.keep_checkpoints, model, ema, rule, stream, field)

    step = checkpoints.resume(cfg.steps) if resuming else None  # resume, or initialise a fresh run
    if step == cfg.steps:
        return TrainResult(run.path, step, last=(run.metrics() or [None])[-1], already_finished=True)
    if step is None:
        step = 0
        set_progress(objective, Progress(0, cfg.steps))
        initialize(model, objective, dataset, cfg.seed, device, parts.dtype)
        distributed.broadcast_module(model)
        ema.reset(model)
        if main:
            run.create(config)
        checkpoints.save(0)
    elif main:
        run.write_config(config)  # train.steps may have been raised, an observe-only setting changed
        if observed:
            values = {key: getattr(cfg, key.split(".")[1]) for key in observed}
            run.append_metrics({"step": step, "event": "observe-only settings changed", **values})

    nan = NanPolicy(cfg, checkpoints, rule, board)  # the loop
    record: dict[str, float] | None = None
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and main), desc=run.path.name, dynamic_ncols=True)
    with catching_signals() as stop, bar, board.start(step):
        while step < cfg.steps:
            set_progress(objective, Progress(step, cfg.steps))  # every evaluation of this step sees the same
            rule.set_lr_factor(lr_factor(config.optim, step, cfg.steps))
            logged = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
            if rule.dynamics:
                rule.dynamics.active = logged
            try:
                out = rule.step(Batches(next(stream), lambda: next(stream)))
            except NonFiniteLoss as e:
                step = bar.n = nan.on_nan(step, e)
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
                    board.log(record)
            if main and samples_due(cfg, step) and isinstance(model, Generative):  # a classifier draws none
                png = run.samples / f"step-{step:07d}.png"
                save_samples(model, ema, dataset, png, seeded_generator(cfg.seed, step, 7))
                board.image(png, step)
            stopping = distributed.any_process(stop.signum is not None)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                board.flush()
                checkpoints.save(step)
            if stopping:
                break
    distributed.barrier()
    return TrainResult(run.path, step, stop.signum, record)


def set_progress(objective: Any, progress: Progress) -> None:
    """Tell a progress-aware objective where training stands (plain callables need not know)."""
    if isinstance(objective, Objective):
        objective.progress = progress


def samples_due(cfg: TrainConfig, step: int) -> bool:
    """A sample plot every ``sample_every`` steps and at the end; none at all when ``sample_every`` is null."""
    if cfg.sample_every is None:
        return False
    return step == cfg.steps or (cfg.sample_every > 0 and step % cfg.sample_every == 0)


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
def initialize(
    model: torch.nn.Module, objective, dataset, seed: int, device: torch.device, dtype: torch.dtype | None = None
) -> None:
    """Run the objective once on a dedicated batch so data-dependent inits (ActNorm, BN) happen before step 0."""
    size = min(512, len(dataset) if hasattr(dataset, "__len__") else 512)
    objective(model, next(BatchStream(dataset, size, seed + 1, device=device, dtype=dtype)))


def save_samples(model, ema: EMA, dataset, path: Path, generator: torch.Generator) -> None:
    """A sample plot with the EMA weights and its own generator, so training's random stream is untouched."""
    from genbits.runs.plots import plot_samples

    was_training = model.training
    model.eval()
    try:
        with ema.swapped_in(model):
            plot_samples(model, dataset, path, generator)
    finally:
        model.train(was_training)
