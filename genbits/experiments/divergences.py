"""The divergence lab: one fixed model family, five divergences, five different answers.

A single Gaussian and a small spline flow are fitted to the 0.7/0.3 two-mode mixture of ``bimodal`` (2-D: modes at
(∓2, 0), std 0.5) and to its x-marginal (``bimodal`` with ``dim=1``) under forward KL, reverse KL, JSD,
Wasserstein-1 and MMD; then every fit is scored under all five. No sampling anywhere: both densities are known (the
target in closed form, the model through ``log_prob``), so each divergence is a deterministic, differentiable
quadrature on a fixed grid (the registered ``quadrature`` objective, ``genbits.objectives.quadrature``), and Adam
descends it directly. Every fit is a run of the one training loop (``train.precision=fp64``, cosine-decayed learning
rate, a batch of 1 that the objective ignores); seeds change only the initialisation.

Grids: 1-D [−8, 8], 512 nodes (spacing 0.031); 2-D [−7, 7] × [−4, 4], 64 × 37 nodes (spacing 0.22, 2.3 nodes per
mode std). The 2-D "W1" fits minimise the sliced W1 over 32 directions (an LP per step is too slow to train on);
they are scored by exact linear-programming OT (POT's ``ot.emd2``, Euclidean cost) on the ≤ 64² training nodes,
between the surplus and the deficit of P − Q. MMD's RBF widths σ ∈ {0.5, 1, 2, 4} are scaled to this target
(MMD-GAN's {1, …, 16} act on critic features). Fits are scored on a 4× finer 2-D grid (see :class:`Scorer`).

Models: the registered full-covariance ``gaussian`` (its mean drawn from N(0, I) per seed: ``init_scale=1``) and the
registered ``flow`` with spline couplings, 1 layer in 1-D (a coupling on one feature conditions on nothing: a free
monotone spline) and 2 in 2-D; no ActNorm, whose data-dependent init would silently initialise from a data batch.
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
import ot  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genbits.config import Config, load_config  # noqa: E402
from genbits.data.toy2d import GaussianMixture, bimodal  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.experiments.threads import one_thread  # noqa: E402
from genbits.models.gaussian import Gaussian  # noqa: E402
from genbits.objectives.quadrature import BANDWIDTHS, Divergence, Grid, divergence  # noqa: E402
from genbits.runs import load_run  # noqa: E402
from genbits.runs.plots import log_density_grid  # noqa: E402
from genbits.train import train  # noqa: E402

DEVICES = ("cpu",)
DEVICES_WHY = "its fits are float64 quadrature on a few thousand grid nodes, where a GPU only adds launch latency"
GRIDS = {"1-D": (((-8.0, 8.0),), (512,)), "2-D": (((-7.0, 7.0), (-4.0, 4.0)), (64, 37))}
SCORING_REFINEMENT = {"1-D": 1, "2-D": 4}
STEPS = {"Gaussian": 300, "flow": 150}
LEARNING_RATES = {"Gaussian": 0.1, "flow": 0.02}
NAMES = ("forward KL", "reverse KL", "JSD", "W1", "MMD")
OPTIONS = {"forward KL": "forward-kl", "reverse KL": "reverse-kl", "JSD": "jsd", "W1": "w1", "MMD": "mmd"}
LABELS = {"forward KL": "KL(p‖q)", "reverse KL": "KL(q‖p)", "JSD": "JSD", "W1": "W1", "MMD": "MMD²"}


@torch.no_grad()
def wasserstein1_ot(log_p: Tensor, log_q: Tensor, grid: Grid, floor: float = 1e-12) -> Tensor:
    """Exact W1 by linear-programming OT (Euclidean cost), evaluation only (no gradient).

    W1 depends on P − Q alone (Kantorovich-Rubinstein): mass both hold stays put, and the LP only carries the
    surplus (P − Q)₊ onto the deficit (P − Q)₋, two disjoint node sets, so at most a quarter of the N² arcs.
    Differences below ``floor`` are dropped: that moves W1 by at most N·floor times the box diameter.
    """
    d = log_p.exp() - log_q.exp()
    surplus, deficit = d > floor, d < -floor
    a, b = d[surplus], -d[deficit]
    cost = torch.cdist(grid.points[surplus], grid.points[deficit])
    plan_cost = ot.emd2((a / a.sum()).numpy(), (b / b.sum()).numpy(), cost.numpy(), numItermax=10**8)
    return torch.as_tensor(plan_cost * (a.sum() + b.sum()).item() / 2, dtype=torch.float64)


def divergences(grid: Grid) -> dict[str, Divergence]:
    """The five divergences on ``grid`` by display name; in 2-D, W1 is replaced by its sliced surrogate."""
    return {name: divergence(OPTIONS[name], grid) for name in NAMES}


# ----------------------------------------------------------------------------------------------------
# Targets, fits through the training loop.


def targets() -> dict[str, GaussianMixture]:
    """The 2-D ``bimodal`` toy (modes at (∓2, 0), std 0.5, weights 0.7/0.3) and its x-marginal as the 1-D target."""
    return {"1-D": bimodal(dim=1), "2-D": bimodal()}


def fit_config(family: str, dim: str, name: str, seed: int, steps: int) -> Config:
    """One fit as a run: ``family`` on the ``dim`` target under divergence ``name`` from ``seed``'s initialisation.

    The learning rate decays to 0 on a cosine: with a constant one, the kinks of W1's |F_P − F_Q| keep the
    parameters jittering by ~1% around the minimum. No EMA and no sample plots: the lab scores the raw fit itself.
    """
    limits, nodes = GRIDS[dim]
    d = len(nodes)
    model: dict[str, Any] = {"name": "gaussian", "init_scale": 1.0}
    if family == "flow":
        model = {"name": "flow", "transform": "spline-coupling", "layers": d, "hidden": [32, 32], "bins": 16}
        model |= {"bound": 5.0, "actnorm": False}
    objective = {"name": "quadrature", "divergence": OPTIONS[name], "limits": [list(pair) for pair in limits]}
    objective |= {"nodes": list(nodes), "bandwidths": list(BANDWIDTHS)}
    return load_config(
        {
            "data": {"name": "bimodal", "dim": d},
            "model": model,
            "objective": objective,
            "optim": {"optimizer": "adam", "lr": LEARNING_RATES[family], "schedule": "cosine"},
            "train": {
                "steps": steps,
                "seed": seed,
                "batch_size": 1,
                "precision": "fp64",
                "device": "cpu",
                "ema_decay": 0.0,
                "sample_every": None,
                "log_every": steps,
                "checkpoint_every": steps,
                "keep_checkpoints": 1,
            },
        }
    )


def fit(family: str, dim: str, name: str, seed: int, steps: int, run_dir: Path) -> tuple[nn.Module, float]:
    """Train (or find already trained) one fit under ``run_dir``; the fitted model and its last training loss.

    The sub-run's name carries the step count: a later call with other ``steps`` starts afresh instead of
    extending a finished fit (which would re-span its cosine schedule).
    """
    path = run_dir / "runs" / f"{family}-{dim}-{OPTIONS[name]}-seed{seed}-{steps}steps"
    train(fit_config(family, dim, name, seed, steps), path, progress=False)
    fitted = load_run(path, ema=False)
    return fitted.model, fitted.metrics[-1]["loss"]


class Scorer:
    """A fitted model against the target under all five divergences, on a finer grid than the one trained on.

    A flexible model can shape its density between the training nodes, where the training quadrature does not
    look (the 2-D flows do: their training-grid masses are off by up to 2%, and their KLs read up to 30% low
    there). Scoring on a 4× finer grid over the same box measures the continuous divergence instead. W1 in 2-D
    is the exact LP on the training grid (the size an LP affords; W1 barely sees sub-node shape); the sliced W1
    the 2-D "W1" fits minimise is kept as the extra score ``sliced W1``.
    """

    def __init__(self, target: GaussianMixture, grid: Grid, refinement: int):
        self.grid, self.fine = grid, grid.refined(refinement)
        self.log_p, self.log_p_fine = grid.log_masses(target.log_prob), self.fine.log_masses(target.log_prob)
        self.divergences = divergences(self.fine)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        log_q = self.fine.log_masses(model.log_prob)
        scores = {name: float(d(self.log_p_fine, log_q)) for name, d in self.divergences.items()}
        if self.grid.dim == 2:
            scores["sliced W1"] = scores["W1"]
            scores["W1"] = float(wasserstein1_ot(self.log_p, self.grid.log_masses(model.log_prob), self.grid))
        return scores

    @torch.no_grad()
    def masses(self, model: nn.Module) -> dict[str, float]:
        """The model's total mass by each grid's quadrature: a gap from 1 flags shape finer than the nodes."""
        return {"training_grid": self.grid.mass(model.log_prob), "scoring_grid": self.fine.mass(model.log_prob)}


def gaussian_parameters(model: Gaussian) -> dict[str, list]:
    """Mean and covariance LLᵀ, the numbers the forward/reverse-KL claim is about."""
    with torch.no_grad():
        L = model.scale_tril()
        return {"mean": model.mean.tolist(), "cov": (L @ L.T).tolist()}


# ----------------------------------------------------------------------------------------------------
# The experiment.


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Fit every (family, dimension, divergence, seed) as a sub-run under ``run_dir/runs``, score each fit under
    all five, write the figure and tables (``full`` changes nothing: the default is already the whole experiment)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with one_thread():  # grid-sized tensors are too small to share: 2 threads ran 2-10× slower on 2 cores
        results, fits = fit_all(run_dir, seeds, steps, progress)
        figure(fits, results, run_dir / "figure.png")
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(tables(results))
    return results


def fit_all(
    run_dir: Path, seeds: int, steps: int | None, progress: bool
) -> tuple[dict[str, Any], dict[str, dict[str, nn.Module]]]:
    """Every (family, dimension) block, timed; the models kept are each divergence's seed-0 fit (for the figure)."""
    start = time.perf_counter()
    cases = [(family, dim) for family in STEPS for dim in GRIDS]
    bar = tqdm(total=len(cases) * len(NAMES) * seeds, desc="divergences", disable=not progress, dynamic_ncols=True)
    scores: dict[str, Any] = {}
    fits: dict[str, dict[str, nn.Module]] = {}
    for family, dim in cases:
        key = f"{family}, {dim}"
        scores[key], fits[key] = fit_case(run_dir, family, dim, seeds, steps or STEPS[family], bar)
    bar.close()
    seconds = round(time.perf_counter() - start, 1)
    return {"settings": settings(seeds, steps), "seconds": seconds, "fits": scores}, fits


def settings(seeds: int, steps: int | None) -> dict[str, Any]:
    """What the numbers depend on, recorded next to them."""
    plane = targets()["2-D"]
    return {
        "seeds": seeds,
        "steps": steps or STEPS,
        "learning_rates": LEARNING_RATES,
        "grids": {dim: {"limits": limits, "nodes": sizes} for dim, (limits, sizes) in GRIDS.items()},
        "scoring_refinement": SCORING_REFINEMENT,
        "mmd_bandwidths": BANDWIDTHS,
        "w1_2d_training": "sliced W1, 32 evenly spaced directions (evaluation: exact OT, ot.emd2)",
        "target": {"centres": plane.centres.tolist(), "std": plane.std, "weights": plane.weights.tolist()},
        "target_1d": "the x-marginal of the 2-D target",
    }


def fit_case(
    run_dir: Path, family: str, dim: str, seeds: int, steps: int, bar: tqdm
) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """One row block of the figure: this family fitted on this target under each divergence, every seed."""
    score = Scorer(targets()[dim], Grid(*GRIDS[dim]), SCORING_REFINEMENT[dim])
    rows, seed0 = {}, {}
    for name in NAMES:
        runs = []
        for seed in range(seeds):
            model, loss = fit(family, dim, name, seed, steps, run_dir)
            record = {"seed": seed, "final_loss": loss, "eval": score(model), "mass": score.masses(model)}
            if isinstance(model, Gaussian):
                record["params"] = gaussian_parameters(model)
            runs.append(record)
            seed0.setdefault(name, model)
            bar.update()
        values = {col: [r["eval"][col] for r in runs] for col in NAMES}
        mean = {col: float(np.mean(v)) for col, v in values.items()}
        rows[name] = {"runs": runs, "mean_eval": mean, "std_eval": {col: float(np.std(v)) for col, v in values.items()}}
    return rows, seed0


def tables(results: dict[str, Any]) -> str:
    """Markdown: a 5×5 score table per family and dimension, and the fitted Gaussians' parameters per seed."""
    out = ["# Divergence lab", "", f"Seeds: {results['settings']['seeds']}; {results['seconds']} s.", ""]
    for key, rows in results["fits"].items():
        out += [f"## {key}", "", *_score_table(rows), ""]
        if key.startswith("Gaussian"):
            out += [*_parameter_table(rows), ""]
    return "\n".join(out)


def _score_table(rows: dict[str, Any]) -> list[str]:
    """Rows = trained under, columns = scored under; seed mean ± std, the best of each column in bold."""
    lines = ["| trained under ↓ / scored under → | " + " | ".join(LABELS[n] for n in NAMES) + " |"]
    lines.append("|---" * (len(NAMES) + 1) + "|")
    best = {col: min(rows[name]["mean_eval"][col] for name in NAMES) for col in NAMES}
    for name in NAMES:
        mean, std = rows[name]["mean_eval"], rows[name]["std_eval"]
        cells = [_cell(mean[col], std[col], best[col]) for col in NAMES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _cell(mean: float, std: float, best: float) -> str:
    text = f"**{mean:.4g}**" if mean <= best * (1 + 1e-9) else f"{mean:.4g}"
    return text if std == 0 else f"{text} ± {std:.2g}"


def _parameter_table(rows: dict[str, Any]) -> list[str]:
    lines = ["| fitted under | seed | mean | covariance |", "|---|---|---|---|"]
    for name in NAMES:
        for r in rows[name]["runs"]:
            lines.append(f"| {name} | {r['seed']} | {_round(r['params']['mean'])} | {_round(r['params']['cov'])} |")
    return lines


def _round(values: list) -> list:
    return np.round(np.asarray(values), 3).tolist()


def figure(fits: dict[str, dict[str, nn.Module]], results: dict[str, Any], path: Path) -> None:
    """Rows = family × dimension, columns = the divergence trained under; seed 0's fit over the target."""
    fig, axes = plt.subplots(len(fits), len(NAMES), figsize=(3.3 * len(NAMES), 2.6 * len(fits)), squeeze=False)
    all_targets = targets()
    for r, (key, models) in enumerate(fits.items()):
        dim = key.split(", ")[1]
        draw = _panel_1d if dim == "1-D" else _panel_2d
        for c, name in enumerate(NAMES):
            draw(axes[r, c], models[name], all_targets[dim])
            value = results["fits"][key][name]["runs"][0]["eval"][name]
            header = f"trained under {name}\n" if r == 0 else ""
            axes[r, c].set_title(f"{header}{LABELS[name]} = {value:.3g}", fontsize=9)
        axes[r, 0].set_ylabel(key, fontsize=10)
    axes[0, 0].legend(fontsize=7, loc="upper right", frameon=False)
    fig.suptitle(
        "One model family, five divergences (seed 0). Target: grey / white contours; fit: red / colour.", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def _panel_1d(ax: plt.Axes, model: nn.Module, target: GaussianMixture) -> None:
    x = torch.linspace(-5, 5, 400, dtype=torch.float64)[:, None]
    ax.fill_between(x[:, 0], target.log_prob(x).exp(), color="0.8", label="target")
    ax.plot(x[:, 0], model.log_prob(x).exp(), color="C3", lw=1.5, label="fit")
    ax.set_xlim(-5, 5)
    ax.set_yticks([])


def _panel_2d(ax: plt.Axes, model: nn.Module, target: GaussianMixture) -> None:
    limits = (-5.0, 5.0, -3.0, 3.0)
    density = np.exp(log_density_grid(lambda x: model.log_prob(x.double()), limits, 200, 120))
    ax.imshow(density, origin="lower", extent=limits, cmap="viridis", aspect="auto")
    target_density = np.exp(log_density_grid(target.log_prob, limits, 200, 120))
    ax.contour(target_density, levels=4, extent=limits, colors="white", linewidths=0.7)
    ax.set_yticks([])
