"""Shared plumbing of the GAN image experiments: one preset, two sizes, every variant × seed as a run of a genbits
sweep, scored with genbits' own feature net (FID/KID on classifier features, comparable only with each other), and
small table and plot helpers.

The CPU size is the preset itself (a width-16 DCGAN on 14×14 Fashion-MNIST, 300 steps); ``full`` is 28×28
Fashion-MNIST with a 4× wider net, trained ten times longer and scored on more samples: a GPU setting, not tried
on a GPU yet (its learning rates are the CPU pilots')."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbits.config import load_config
from genbits.errors import GenbitsError
from genbits.experiments.placement import Placement
from genbits.metrics.extractors import extractor
from genbits.metrics.fid import fid, kid
from genbits.runs import Run
from genbits.runs.evaluate import default_features, model_samples, reference_features
from genbits.sweeps.sweep import OutcomeRules, run_sweep
from genbits.train import checkpoint
from genbits.train.rundir import RunDir

PRESET = "gan-fmnist14"
WORKERS = 2  # runs at a time, one torch thread each: the 2 cores of a small machine, or one GPU shared
KID_SUBSETS = 10  # of 1000 samples: a tenth of genbits eval's cost, its error far below the differences compared
Row = dict[str, Any]


@dataclass(frozen=True)
class Size:
    """What ``full`` changes: preset overrides, training steps and the number of samples scored."""

    overrides: tuple[str, ...]
    steps: int
    eval_samples: int

    def overrides_with_steps(self) -> list[str]:
        return [*self.overrides, f"train.steps={self.steps}"]


CPU = Size(overrides=(), steps=300, eval_samples=2000)
GPU = Size(overrides=("data.size=0", "model.width=64", "train.threads=0"), steps=3000, eval_samples=10000)


def size(full: bool, steps: int | None = None, cpu_steps: int | None = None) -> Size:
    """The CPU or GPU size, with ``steps`` (the experiment's --steps) replacing its default length if given;
    ``cpu_steps`` lengthens the CPU default for a study whose effect needs more training to show."""
    chosen = GPU if full else replace(CPU, steps=cpu_steps or CPU.steps)
    return replace(chosen, steps=steps or chosen.steps)


def sweep(
    run_dir: Path,
    grid: dict[str, Sequence[str]],
    seeds: int,
    overrides: Sequence[str],
    progress: bool,
    placement: Placement,
    preset: str = PRESET,
    loss_key: str = "loss/discriminator",
) -> list[Row]:
    """Every grid point × seed as one run of ``preset`` (judged by its ``loss_key``) on ``placement``'s device, by
    ``genbits.sweeps.sweep`` (resumable, ``WORKERS`` at a time on a CPU, one on a GPU, unless told) in
    ``run_dir/sweep``; returns the sweep's rows, each with ``path``, the run directory, added. This process then
    keeps the runs' ``train.threads`` for scoring them."""
    sweep_dir = run_dir / "sweep"
    result = run_sweep(
        preset,
        [f"{key}={','.join(values)}" for key, values in grid.items()],
        sweep_dir,
        seeds=seeds,
        overrides=[*overrides, *placement.overrides()],
        workers=placement.pool(WORKERS),
        rules=OutcomeRules(loss_key=loss_key),
        progress=progress,
    )
    if result.interrupted:
        raise GenbitsError(f"the sweep in {sweep_dir} was interrupted; run the same command again to resume it")
    threads = load_config(preset, list(overrides)).train.threads
    if threads:  # score in this process as the runs trained (as train() does): tiny nets on busy cores crawl with more
        torch.set_num_threads(threads)
    return [row | {"path": sweep_dir / row["run"]} for row in result.runs]


def by_point(rows: Sequence[Row]) -> list[list[Row]]:
    """The rows grouped by grid point, in grid order (a one-key grid: the order of its values)."""
    points: dict[str, list[Row]] = {}
    for row in rows:
        points.setdefault(row["point"], []).append(row)
    return list(points.values())


def scores(run: Run, n: int, how: Mapping[str, Any] | None = None) -> dict[str, float]:
    """FID and KID of n samples (seed 0, sampling options ``how``) against n test images on genbits' classifier
    features (the reference features cached as by ``genbits eval``, whose FID this is; its KID's 100 subsets would
    cost more than the rest)."""
    net = extractor(default_features(run))
    real, fake = reference_features(run, net, n), net(model_samples(run, n, how=how))
    kid_mean, _ = kid(real, fake, subsets=KID_SUBSETS, generator=torch.Generator().manual_seed(0))
    return {"step": run.step, "fid": fid(real, fake), "kid": kid_mean}


def checkpointed(steps: int, points: int) -> list[str]:
    """Overrides that keep ``points`` evenly spaced checkpoints of a ``steps``-long run (the last at its end)."""
    return [f"train.checkpoint_every={math.ceil(steps / points)}", f"train.keep_checkpoints={points}"]


def scores_over_training(run: Run, n: int) -> list[dict[str, float]]:
    """Scores of every kept checkpoint after step 0, oldest first: a curve for one training run and one dataset
    load (the model is left at the last checkpoint)."""
    curve = []
    for path in checkpoint.list_checkpoints(RunDir(run.path).checkpoints):
        step, state = checkpoint.load(path, run.config.hash())
        if step > 0:
            run.model.load_state_dict(state["model"])
            curve.append(scores(replace(run, step=step), n))
    return curve


def final_spread(seeds_curves: Sequence[Sequence[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Median and range over seeds of the last point's FID and KID."""
    return {key: spread([curve[-1][key] for curve in seeds_curves]) for key in ("fid", "kid")}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range over seeds: with 2–3 seeds a standard deviation would claim more than we know."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def spread_cell(values: Sequence[float], digits: int = 1) -> str:
    s = spread(values)
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"


def separated(treatment: Sequence[float], control: Sequence[float]) -> str:
    """The image studies' decision rule on one score where lower is better, over seeds: the claim holds if every
    seed of the treatment scores below every seed of its control (the ranges do not overlap), fails if every control
    seed scores below every treatment seed, and is undecided at this budget otherwise."""
    if max(treatment) < min(control):
        return "holds"
    if max(control) < min(treatment):
        return "fails"
    return "undecided at this budget"


SEPARATED = (
    "holds if the seed ranges do not overlap in the claim's favour, fails if they do not overlap against it, "
    "else undecided at this budget"
)


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """The table's footer: claim, control, the rule fixed before running and the verdict, from results.json."""
    return [
        f"Claim: {results['claim']}. Control: {results['control']}. "
        f"Rule (fixed before running): {results['rule']}. Verdict: **{results['verdict']}**.",
        "",
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def band(ax: Any, x: Sequence[float], curves: Sequence[Sequence[float]], color: str, label: str) -> None:
    """Median over seeds as a line, the min–max range as a band, each seed as a faint line."""
    values = np.asarray(curves, dtype=float)
    for curve in values:
        ax.plot(x, curve, color=color, alpha=0.3, lw=0.8)
    ax.plot(x, np.median(values, axis=0), "-o", color=color, label=label, ms=4)
    ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15)
