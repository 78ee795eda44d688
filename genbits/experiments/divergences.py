"""The divergence lab: one fixed model family, five divergences, five different answers.

A single Gaussian and a small spline flow are fitted to the 0.7/0.3 two-mode mixture of ``bimodal`` (2-D: modes at
(∓2, 0), std 0.5) and to its x-marginal (1-D) under forward KL, reverse KL, JSD, Wasserstein-1 and MMD; then every
fit is scored under all five. No sampling anywhere: both densities are known (the target in closed form, the model
through ``log_prob``), so each divergence is a deterministic, differentiable quadrature on a fixed grid, and Adam
descends it directly (float64 throughout; cosine-decayed learning rate; seeds change only the initialisation).

Quadrature. The nodes carry the masses P_i ∝ p(x_i), Q_i ∝ q(x_i), normalised over the grid (the cell volume
cancels). Each divergence is exact for this discrete pair, and for smooth densities that vanish at the edges of the
box the equispaced rule converges faster than any power of the spacing, so the values match the continuous ones to
~1e-6 (the tests check closed forms and ``scipy.integrate.quad``). Grids: 1-D [−8, 8], 512 nodes (spacing 0.031);
2-D [−7, 7] × [−4, 4], 64 × 37 nodes (spacing 0.22, 2.3 nodes per mode std). Fits are scored on a 4× finer 2-D grid
(see :class:`Scorer`).

- forward KL Σ P log(P/Q), reverse KL Σ Q log(Q/P), JSD ½KL(P‖M) + ½KL(Q‖M) with M = (P + Q)/2 (nats, ≤ log 2).
- W1 in 1-D: ∫|F_P − F_Q| dx with the CDFs as cumulative sums of the masses (exact for the pair, differentiable).
- W1 in 2-D: scored exactly by linear-programming OT (POT's ``ot.emd2``, Euclidean cost) on the ≤ 64² training
  nodes, between the surplus and the deficit of P − Q. An LP per step is too slow to train on (about a second),
  so the 2-D "W1" fits minimise the sliced W1: the mean 1-D W1 of the projected masses over 32 evenly spaced
  directions (a deterministic quadrature of the angle; a metric, 2/π·W1 for translates, but its minimiser need
  not be W1's).
- MMD² = (P − Q)ᵀ K (P − Q) (= PᵀKP + QᵀKQ − 2PᵀKQ, never negative from rounding) with the kernel of
  ``genbits.metrics.mmd``, Σ_σ exp(−‖x − y‖²/(2σ²)), here σ ∈ {0.5, 1, 2, 4}: scaled to this target (MMD-GAN's
  {1, …, 16} act on critic features). Each RBF term factorises over coordinates, so K is applied as one small
  matrix per axis instead of an N × N Gram matrix.

Models: the registered full-covariance ``gaussian`` (its mean drawn from N(0, I) per seed) and the registered
``flow`` with spline couplings, 1 layer in 1-D (a coupling on one feature conditions on nothing: a free monotone
spline) and 2 in 2-D; no ActNorm, whose data-dependent init would silently initialise from the grid nodes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
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

from genbits.data.toy2d import GaussianMixture, bimodal  # noqa: E402
from genbits.experiments.threads import one_thread  # noqa: E402
from genbits.models.flows import flow  # noqa: E402
from genbits.models.gaussian import Gaussian, gaussian  # noqa: E402
from genbits.plots import log_density_grid  # noqa: E402

Divergence = Callable[[Tensor, Tensor], Tensor]
"""(log P, log Q) → a scalar: a divergence between two distributions given as log-masses on the same grid."""

BANDWIDTHS = (0.5, 1.0, 2.0, 4.0)
GRIDS = {"1-D": (((-8.0, 8.0),), (512,)), "2-D": (((-7.0, 7.0), (-4.0, 4.0)), (64, 37))}
SCORING_REFINEMENT = {"1-D": 1, "2-D": 4}
STEPS = {"Gaussian": 300, "flow": 150}
LEARNING_RATES = {"Gaussian": 0.1, "flow": 0.02}
NAMES = ("forward KL", "reverse KL", "JSD", "W1", "MMD")
LABELS = {"forward KL": "KL(p‖q)", "reverse KL": "KL(q‖p)", "JSD": "JSD", "W1": "W1", "MMD": "MMD²"}


class Grid:
    """Equally spaced nodes on a box (a tensor product of 1-D axes): where densities become discrete masses."""

    def __init__(self, limits: Sequence[tuple[float, float]], sizes: Sequence[int]):
        self.limits = tuple(limits)
        self.axes = [torch.linspace(lo, hi, n, dtype=torch.float64) for (lo, hi), n in zip(limits, sizes, strict=True)]
        self.shape = tuple(sizes)
        self.points = torch.stack(torch.meshgrid(*self.axes, indexing="ij"), -1).reshape(-1, len(self.axes))
        self.cell = math.prod(float(a[1] - a[0]) for a in self.axes)

    @property
    def dim(self) -> int:
        return len(self.axes)

    def refined(self, factor: int) -> Grid:
        """The same box with ``factor``× smaller spacing (the old nodes are among the new ones)."""
        return Grid(self.limits, [(n - 1) * factor + 1 for n in self.shape])

    def log_masses(self, log_density: Callable[[Tensor], Tensor]) -> Tensor:
        """log P_i, P_i = p(x_i) / Σ_j p(x_j): the density as a distribution on the nodes, shape (N,)."""
        return torch.log_softmax(log_density(self.points), 0)

    def mass(self, log_density: Callable[[Tensor], Tensor]) -> float:
        """Σ_i p(x_i)·cell: 1 when the density decays inside the box and is smooth on the scale of the spacing."""
        return math.exp(torch.logsumexp(log_density(self.points), 0).item()) * self.cell


# ----------------------------------------------------------------------------------------------------
# Divergences between log-masses on one grid.


def kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(P‖Q) = Σ P log(P/Q); the densities here are positive everywhere, so no 0·log 0 guard is needed."""
    return (log_p.exp() * (log_p - log_q)).sum()


def reverse_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    return kl(log_q, log_p)


def jsd(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Jensen-Shannon: ½KL(P‖M) + ½KL(Q‖M), M the even mixture; in nats, at most log 2."""
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    return 0.5 * (kl(log_p, log_m) + kl(log_q, log_m))


def wasserstein1_cdf(log_p: Tensor, log_q: Tensor, grid: Grid) -> Tensor:
    """1-D W1 = ∫|F_P − F_Q| dx: the CDFs step at the nodes and differ by a constant between two of them."""
    gaps = grid.axes[0].diff()
    return ((log_p.exp() - log_q.exp()).cumsum(0)[:-1].abs() * gaps).sum()


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


class SlicedWasserstein1:
    """Mean 1-D W1 of the projected masses over ``directions`` evenly spaced angles in [0, π) (2-D grids).

    The projections of the nodes do not depend on the model, so each direction's sort order and the gaps between
    sorted projections are computed once; a step costs a gather and a cumulative sum per direction.
    """

    def __init__(self, grid: Grid, directions: int = 32):
        angles = torch.arange(directions, dtype=torch.float64) * math.pi / directions
        projected = grid.points @ torch.stack([angles.cos(), angles.sin()])  # (N, directions)
        sorted_values, self.order = projected.sort(0)
        self.gaps = sorted_values.diff(dim=0)  # (N − 1, directions)

    def __call__(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        cdf_gap = (log_p.exp() - log_q.exp())[self.order].cumsum(0)[:-1]
        return (cdf_gap.abs() * self.gaps).sum(0).mean()


class MMD:
    """MMD² = (P − Q)ᵀ K (P − Q), K = Σ_σ exp(−‖x − y‖²/(2σ²)) (the kernel of ``genbits.metrics.mmd``).

    Each RBF term is a product over coordinates, so on a tensor grid K·w is one small Gram matrix per axis.
    """

    def __init__(self, grid: Grid, bandwidths: Sequence[float] = BANDWIDTHS):
        self.shape = grid.shape
        self.factors = [[_rbf_gram(axis, s) for axis in grid.axes] for s in bandwidths]

    def __call__(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        d = (log_p.exp() - log_q.exp()).reshape(self.shape)
        return sum((d * _apply_per_axis(d, factors)).sum() for factors in self.factors)


def _rbf_gram(nodes: Tensor, bandwidth: float) -> Tensor:
    return torch.exp(-(nodes[:, None] - nodes[None, :]).square() / (2 * bandwidth**2))


def _apply_per_axis(values: Tensor, matrices: Sequence[Tensor]) -> Tensor:
    """(⊗_k A_k)·values for values on a tensor grid: multiply along each axis in turn."""
    for axis, matrix in enumerate(matrices):
        values = torch.movedim(torch.tensordot(matrix, values, dims=([1], [axis])), 0, axis)
    return values


def divergences(grid: Grid) -> dict[str, Divergence]:
    """The five training objectives on ``grid``; in 2-D, W1 is replaced by its sliced surrogate."""
    w1 = partial(wasserstein1_cdf, grid=grid) if grid.dim == 1 else SlicedWasserstein1(grid)
    return {"forward KL": kl, "reverse KL": reverse_kl, "JSD": jsd, "W1": w1, "MMD": MMD(grid)}


# ----------------------------------------------------------------------------------------------------
# Targets, models, fitting.


def targets() -> dict[str, GaussianMixture]:
    """The 2-D ``bimodal`` toy (modes at (∓2, 0), std 0.5, weights 0.7/0.3) and its x-marginal as the 1-D target."""
    plane = bimodal()
    return {"1-D": GaussianMixture(plane.centres[:, :1], plane.std, plane.weights), "2-D": plane}


def make_model(family: str, dim: int, seed: int) -> nn.Module:
    """A float64 model whose initialisation depends only on ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if family == "Gaussian":
            model = gaussian((dim,))
            nn.init.normal_(model.mean)  # off the symmetric point: which mode reverse KL picks depends on the seed
        else:
            model = flow((dim,), "spline-coupling", layers=dim, hidden=(32, 32), bins=16, bound=5.0, actnorm=False)
    return model.double()


def fit(model: nn.Module, log_p: Tensor, grid: Grid, divergence: Divergence, steps: int, lr: float) -> float:
    """Adam on the quadrature value itself (an exact gradient: no batch noise to average out).

    The learning rate decays to 0 on a cosine: with a constant one, the kinks of W1's |F_P − F_Q| keep the
    parameters jittering by ~1% around the minimum.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        loss = divergence(log_p, grid.log_masses(model.log_prob))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return loss.item()


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
    run_dir: str | Path, seeds: int = 3, steps: int | None = None, progress: bool = True, full: bool = False
) -> dict[str, Any]:
    """The experiment (``full`` changes nothing: the default is already the whole experiment)."""
    """Fit every (family, dimension, divergence, seed), score each fit under all five, write the figure and tables."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with one_thread():  # grid-sized tensors are too small to share: 2 threads ran 2-10× slower on 2 cores
        results, fits = fit_all(seeds, steps, progress)
        figure(fits, results, run_dir / "figure.png")
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(tables(results))
    return results


def fit_all(seeds: int, steps: int | None, progress: bool) -> tuple[dict[str, Any], dict[str, dict[str, nn.Module]]]:
    """Every (family, dimension) block, timed; the models kept are each divergence's seed-0 fit (for the figure)."""
    start = time.perf_counter()
    cases = [(family, dim) for family in STEPS for dim in GRIDS]
    bar = tqdm(total=len(cases) * len(NAMES) * seeds, desc="divergences", disable=not progress, dynamic_ncols=True)
    scores: dict[str, Any] = {}
    fits: dict[str, dict[str, nn.Module]] = {}
    for family, dim in cases:
        key = f"{family}, {dim}"
        scores[key], fits[key] = fit_case(family, dim, seeds, steps or STEPS[family], bar)
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


def fit_case(family: str, dim: str, seeds: int, steps: int, bar: tqdm) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """One row block of the figure: this family fitted on this target under each divergence, every seed."""
    grid, target = Grid(*GRIDS[dim]), targets()[dim]
    log_p, score = grid.log_masses(target.log_prob), Scorer(target, grid, SCORING_REFINEMENT[dim])
    rows, seed0 = {}, {}
    for name, divergence in divergences(grid).items():
        runs = []
        for seed in range(seeds):
            model = make_model(family, grid.dim, seed)
            loss = fit(model, log_p, grid, divergence, steps, LEARNING_RATES[family])
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
