"""Adam GD vs RK4 vs drift-corrected SGD on the mixture-of-Gaussians toys: modes captured and sample quality along
training, not just at the end.

The talk: Adam with a low β1 trains GANs, "still, performance degrades later in training"; ODE-GAN (Qin et al.
2020) follows the game's continuous flow with RK4 instead of one gradient step; Rosca et al. (2021) keep SGD and
cancel the interaction terms of its discretization drift. Each rule trains the same MLP GAN from the same seeds
(presets ``gan-ring``: 8 Gaussians, radius 2, std 0.02; ``gan-grid``: 5 × 5 Gaussians, std 0.05), and every
checkpoint along the way is scored with PacGAN's metrics (Lin et al. 2018: 2,500 samples, each to its nearest mode,
high quality within 3 std, a mode captured when it holds ≥ 10 high-quality samples). Raw weights (no EMA): the
rule's own iterates.

Rules (the same steps per dataset for all; a step of RK4 costs ~3× Adam's, of the drift correction ~2× (double
backward)):

- Adam GD: simultaneous ``gd``, Adam with β = (0.5, 0.999), the presets' rule: lr 5e-3 for both players on the
  ring; on the grid 1e-3 for the generator and 4e-3 for the critic (TTUR).
- RK4: ``ode`` method rk4, joint integration, stages on the step's batch, ODE-GAN's regularizer γ = 0.07 (the MoG
  notebook's), plain SGD steps h = 0.3 (ring) / 0.1 (grid: 0.3 diverged).
- drift-corrected SGD: ``drift``, simultaneous, cancel-interaction (multiplier −1 on both interaction terms,
  derived coefficients), plain SGD for both players, lr 0.1 (ring) / 0.05 (grid: 0.1 diverged).

The single-seed pilots that fixed these settings are in ``docs/pilots.md`` (gan-mog).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genbits.config import Config, load_config  # noqa: E402
from genbits.data import build_dataset  # noqa: E402
from genbits.errors import TrainingDiverged  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.experiments.threads import one_thread  # noqa: E402
from genbits.runs import Run, load_run  # noqa: E402
from genbits.runs.evaluate import evaluate, model_samples  # noqa: E402
from genbits.sweeps.parallel import cores, map_processes  # noqa: E402
from genbits.train import checkpoint, train  # noqa: E402
from genbits.train.parts import build_parts  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
DATASETS = {"ring": "gan-ring", "grid": "gan-grid"}


def plain_sgd(lr: float) -> list[str]:
    """Plain steps of size lr for both players (the grid preset gives its critic a larger Adam rate)."""
    return ["optim.optimizer=sgd", f"optim.lr={lr}", f"optim.players.discriminator.lr={lr}"]


# rule -> dataset -> overrides of the preset, whose own rule is Adam GD
RK4 = "optim.rule={name: ode, method: rk4, regularizer: 0.07}"
DRIFT = "optim.rule={name: drift, correction: cancel-interaction}"
RULES: dict[str, dict[str, list[str]]] = {
    "Adam GD": {"ring": [], "grid": []},
    "RK4": {"ring": [RK4, *plain_sgd(0.3)], "grid": [RK4, *plain_sgd(0.1)]},
    "drift-corrected SGD": {"ring": [DRIFT, *plain_sgd(0.1)], "grid": [DRIFT, *plain_sgd(0.05)]},
}
FULL = {"steps": 20000, "model": ["model.width=256", "model.depth=3"]}
EVALUATIONS = 15  # checkpoints scored after step 0
EVAL_SAMPLES = 2500
SCATTER_SAMPLES = 2000


def run(
    run_dir: str | Path,
    seeds: int = 5,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train every (dataset, rule, seed) in parallel processes (one per core, one thread each), score every
    checkpoint, write curves.png, samples.png and table.md. Rerunning resumes unfinished runs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    configs = {
        (dataset, rule, seed): config_for(
            DATASETS[dataset], RULES[rule][dataset] + placement.overrides(), seed, steps, full
        )
        for dataset in DATASETS
        for rule in RULES
        for seed in range(seeds)
    }
    calls = [(c.to_dict(), str(run_dir / name(*key))) for key, c in configs.items()]
    tracked = {}
    with tqdm(total=len(calls), desc="gan-mog", disable=not progress, dynamic_ncols=True) as bar:
        for (_, path), result in map_processes(track, calls, placement.pool(min(cores(), len(calls)))):
            tracked[path] = result
            bar.update()
    results: dict[str, Any] = {dataset: {} for dataset in DATASETS}
    for dataset in DATASETS:
        for rule, by_dataset in RULES.items():
            runs = [tracked[str(run_dir / name(dataset, rule, seed))] for seed in range(seeds)]
            results[dataset][rule] = {"overrides": by_dataset[dataset], "runs": runs} | summary(runs)
    lengths = {dataset: configs[dataset, next(iter(RULES)), 0].train.steps for dataset in DATASETS}
    settings = {"seeds": seeds, "steps": lengths, "full": full, "eval_samples": EVAL_SAMPLES, "min_count": 10}
    out = {"settings": settings, "seconds": round(time.perf_counter() - start, 1), "datasets": results}
    (run_dir / "results.json").write_text(json.dumps(out, indent=2))
    (run_dir / "table.md").write_text(table(out))
    curves_figure(results, lengths, run_dir / "curves.png")
    with one_thread():
        samples_figure(run_dir, run_dir / "samples.png")
    return out


def name(dataset: str, rule: str, seed: int) -> str:
    """The sub-run directory, e.g. ring-adam-gd-s0."""
    return f"{dataset}-{rule.lower().replace(' ', '-')}-s{seed}"


def config_for(preset: str, rule: list[str], seed: int, steps: int | None, full: bool) -> Config:
    """The preset with this rule and seed; its own length unless ``steps`` or ``full`` says otherwise; a checkpoint
    every steps/EVALUATIONS, all of them kept."""
    base = load_config(preset, rule + (FULL["model"] if full else []))
    steps = steps or (FULL["steps"] if full else base.train.steps)
    every = max(1, steps // EVALUATIONS)
    schedule = [f"train.checkpoint_every={every}", f"train.keep_checkpoints={steps // every + 2}"]
    length = [f"train.seed={seed}", f"train.steps={steps}", "train.sample_every=0"]
    return load_config(base.to_dict(), schedule + length)


def track(config: dict[str, Any], path: str) -> dict[str, Any]:
    """Train on one thread (a run that diverges keeps its checkpoints so far), then score every checkpoint.

    A module-level function of plain arguments: it runs in a worker process."""
    torch.set_num_threads(1)
    config, diverged = load_config(config), None
    try:
        train(config, path, progress=False)
    except TrainingDiverged as e:
        diverged = str(e)
    return {"seed": config.train.seed, "diverged": diverged, "curve": curve(config, Path(path))}


def curve(config: Config, path: Path) -> list[dict[str, float]]:
    """Modes captured and share of high-quality samples at every checkpoint of the run in ``path``.

    After a divergence the generator outputs NaN: the checkpoints it never wrote count as 0 modes, 0% quality."""
    parts = build_parts(config)
    scored = {}
    for file in checkpoint.list_checkpoints(path / "checkpoints"):
        step, state = checkpoint.load(file, config.hash())
        parts.model.load_state_dict(state["model"])
        parts.model.eval()
        modes = evaluate(Run(path, config, parts.model, parts.dataset, step, []), EVAL_SAMPLES, ["modes"])["modes"]
        scored[step] = {"step": step, "modes": modes["modes_captured"], "high_quality": modes["high_quality"]}
    every = config.train.checkpoint_every
    planned = sorted({*range(0, config.train.steps + 1, every), config.train.steps})
    return [scored.get(step, {"step": step, "modes": 0, "high_quality": 0.0}) for step in planned]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per seed, the last checkpoint and the best trained one (most modes, then most high-quality samples; step 0
    is left out: the untrained generator sits on the grid's central mode)."""
    end = [r["curve"][-1] for r in runs]
    best = [max(r["curve"][1:], key=lambda p: (p["modes"], p["high_quality"])) for r in runs]
    return {"end": end, "best": best}


# ----------------------------------------------------------------------------------------------------- outputs


def table(results: dict[str, Any]) -> str:
    """Per dataset × rule: modes and % high quality at the end and at each seed's best checkpoint."""
    s = results["settings"]
    lines = [
        "# Adam GD vs RK4 vs drift-corrected SGD on the MoG toys",
        "",
        f"{s['seeds']} seeds; steps: " + ", ".join(f"{d} {n}" for d, n in s["steps"].items()) + "; "
        f"{s['eval_samples']} samples per checkpoint; "
        f"median (min–max) over seeds; {results['seconds']} s.",
        "",
        "| dataset | rule | modes, end | % HQ, end | modes, best | % HQ, best | step of best |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, rules in results["datasets"].items():
        for rule, r in rules.items():
            cells = [
                spread([p["modes"] for p in r["end"]], "{:g}"),
                spread([100 * p["high_quality"] for p in r["end"]], "{:.0f}"),
                spread([p["modes"] for p in r["best"]], "{:g}"),
                spread([100 * p["high_quality"] for p in r["best"]], "{:.0f}"),
                spread([p["step"] for p in r["best"]], "{:g}"),
            ]
            diverged = sum(run["diverged"] is not None for run in r["runs"])
            note = f" ({diverged} diverged)" if diverged else ""
            lines.append(f"| {dataset} | {rule}{note} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def spread(values: list[float], fmt: str) -> str:
    """median (min–max)."""
    return f"{fmt.format(np.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def curves_figure(results: dict[str, Any], steps: dict[str, int], path: Path) -> None:
    """Rows: datasets; columns: modes captured (out of all), % high quality; per rule the median over seeds and its
    min–max band. Step 0 is left out: the untrained generator sits on the grid's central mode (70–90% "quality")."""
    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.6 * len(results)), squeeze=False)
    for row, (dataset, rules) in zip(axes, results.items(), strict=True):
        for i, (rule, r) in enumerate(rules.items()):
            step = np.array([p["step"] for p in r["runs"][0]["curve"][1:]])
            for ax, key, scale in ((row[0], "modes", 1), (row[1], "high_quality", 100)):
                values = scale * np.array([[p[key] for p in run["curve"][1:]] for run in r["runs"]])
                ax.plot(step, np.median(values, 0), color=f"C{i}", lw=2, label=rule)
                ax.fill_between(step, values.min(0), values.max(0), color=f"C{i}", alpha=0.2, lw=0)
        row[0].set_ylim(0, mode_count(dataset) + 0.5)
        row[0].set_ylabel(f"{dataset}: modes captured")
        row[1].set_ylabel(f"{dataset}: % high quality")
        for ax in row:
            ax.set_xlim(0, steps[dataset])
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle("Median over seeds (bands: min–max)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def mode_count(dataset: str) -> int:
    data = load_config(DATASETS[dataset]).data
    return len(build_dataset(data.name, data.options).centres)


@torch.no_grad()
def samples_figure(run_dir: Path, path: Path) -> None:
    """Rows: datasets; columns: rules; seed 0's final samples over the mode centres."""
    fig, axes = plt.subplots(len(DATASETS), len(RULES), figsize=(3.6 * len(RULES), 3.6 * len(DATASETS)), squeeze=False)
    for row, dataset in zip(axes, DATASETS, strict=True):
        for ax, rule in zip(row, RULES, strict=True):
            fitted = load_run(run_dir / name(dataset, rule, 0), ema=False)
            samples = model_samples(fitted, SCATTER_SAMPLES).numpy()
            centres = fitted.dataset.centres.numpy()
            ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4, color="C1")
            ax.scatter(centres[:, 0], centres[:, 1], s=12, color="k", marker="x")
            reach = 1.5 * np.abs(centres).max()
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
            ax.set_aspect("equal")
            ax.set_title(f"{dataset}, {rule} (seed 0, step {fitted.step})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
