"""The Dirac-GAN (Mescheder et al. 2018): on the smallest GAN, each update rule's fate is the spectral radius ρ of its
update map, and the trajectories follow it.

Data at 0, generator a point mass at θ, critic D(x) = φx (1-D, minimax logistic losses, float64). The field
F = σ(φθ)(φ, −θ) is a rotation about the equilibrium θ = φ = 0 that conserves θ² + φ², so the continuous flow circles
forever and the rule alone decides between spiralling out (ρ > 1), circling (ρ = 1) and converging (ρ < 1).

Predicted: ρ of the Jacobian of one step at the equilibrium (``genbits.optim.linear_analysis``, the rule's own
``play`` differentiated). Measured: the rule's own ``step`` on the registered ``dirac-gan`` model through its
GradientField, from θ = φ = 0.01 (near 0 the step is linear up to terms of order θφ ≈ 1e-4), with the
growth rate (‖v_K‖/‖v_0‖)^(1/K). For a normal map (simultaneous GD, RK4, the simultaneous drift corrections) the norm
scales by exactly ρ per step; otherwise (alternating turns, the regularizer) only up to a bounded factor, the
condition number κ of the eigenvectors, so the two agree within log κ / K per step.

Verdict, from ρ: diverges if ρ > 1 + ε, converges if ρ < 1 − ε, bounded otherwise, with ε = 1e-9: a norm changing
by less than that moves by under 0.1% in a million steps, conserved for any run at this step size. All rules take
plain steps of size h = 0.1 for both players.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import genbits.components  # noqa: E402, F401  (fills the registries)
from genbits.config import OptimConfig  # noqa: E402
from genbits.data.base import Batch  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.experiments.threads import one_thread  # noqa: E402
from genbits.objectives.base import players_of  # noqa: E402
from genbits.optim.field import GradientField  # noqa: E402
from genbits.optim.games import GameRule  # noqa: E402
from genbits.optim.linear_analysis import spectral_radius, step_jacobian  # noqa: E402
from genbits.optim.rules import Batches  # noqa: E402
from genbits.registry import MODELS, OBJECTIVES, RULES  # noqa: E402

DEVICES = ("cpu",)
DEVICES_WHY = "the Dirac-GAN has two parameters: its float64 analysis is CPU work"
H = 0.1
START = 0.01
STEPS = {False: 800, True: 4000}  # by ``full``
CONSERVED = 1e-9
F64 = torch.float64

# label → (registered rule, options). Simultaneous GD is ``drift`` without corrections: ``gd``'s map, as a GameRule
# (``gd`` steps through its optimizers without ``play``, so it has no Jacobian to differentiate).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "simultaneous GD": ("drift", {"correction": "none"}),
    "alternating GD": ("alternating", {}),
    "RK4": ("ode", {"method": "rk4"}),
    "RK4 + regularizer γ=0.07": ("ode", {"method": "rk4", "regularizer": 0.07}),
    "cancel interaction drift": ("drift", {"correction": "cancel-interaction"}),
    "alternating + cancel interaction": ("drift", {"updates": "alternating", "correction": "cancel-interaction"}),
    "interaction drift × −2": ("drift", {"discriminator_interaction": -2.0, "generator_interaction": -2.0}),
}


@dataclass
class Prediction:
    """The linearized update map at the equilibrium: its spectral radius and its eigenvectors' condition number."""

    rho: float
    kappa: float


def build(rule: str, options: dict[str, Any], start: float, h: float = H) -> tuple[nn.Module, Any, GameRule]:
    """The 1-D Dirac-GAN in float64 at θ = φ = ``start`` with ``rule`` taking plain steps of size h."""
    model = MODELS.build("dirac-gan", {"theta": start, "phi": start}, event_shape=(1,)).to(F64)
    objective = OBJECTIVES.build("gan", {"loss": "minimax"})
    players = players_of(model)
    field = GradientField(model, objective, players)
    built = RULES.build(rule, options, players=players, optim=OptimConfig(optimizer="sgd", lr=h), field=field)
    return model, objective, built


def data_batch() -> Batch:
    """The data: every sample at 0 (the batch size does not matter, the losses are means)."""
    return Batch(torch.zeros(4, 1, dtype=F64))


def predict(rule: str, options: dict[str, Any]) -> Prediction:
    """ρ and κ of the Jacobian of one step at θ = φ = 0."""
    model, objective, built = build(rule, options, 0.0)
    jacobian = step_jacobian(built, model, objective, data_batch())
    eigenvectors = torch.linalg.eig(jacobian).eigenvectors
    return Prediction(spectral_radius(jacobian), float(torch.linalg.cond(eigenvectors)))


def trajectory(rule: str, options: dict[str, Any], steps: int) -> np.ndarray:
    """(θ, φ) after each of ``steps`` steps of the rule on the model, shape (steps + 1, 2)."""
    model, _, built = build(rule, options, START)
    batch = data_batch()
    batches = Batches(batch, lambda: batch)
    points = [point(model)]
    for _ in range(steps):
        built.step(batches)
        points.append(point(model))
    return np.array(points)


def point(model: nn.Module) -> list[float]:
    return [model.generator.theta.item(), model.discriminator.phi.item()]


def growth_rate(path: np.ndarray) -> float:
    """(‖v_K‖/‖v_0‖)^(1/K): the measured factor per step."""
    norms = np.linalg.norm(path, axis=1)
    return float((norms[-1] / norms[0]) ** (1 / (len(path) - 1)))


def verdict(rho: float) -> str:
    """The fate ρ implies; |ρ − 1| ≤ CONSERVED counts as bounded (see the module docstring)."""
    if rho > 1 + CONSERVED:
        return "diverges"
    return "converges" if rho < 1 - CONSERVED else "bounded"


def agrees(measured: float, prediction: Prediction, steps: int) -> bool:
    """Measured and predicted log-rates within log κ / K (the bounded factor of a non-normal map), 1% (the
    nonlinearity at this distance from 0) and 1e-12 (rounding)."""
    gap = abs(math.log(measured) - math.log(prediction.rho))
    return gap <= math.log(prediction.kappa) / steps + 0.01 * abs(math.log(prediction.rho)) + 1e-12


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Predict and simulate every rule (``seeds`` is unused: the game is deterministic; ``full``: 4000 steps)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = steps or STEPS[full]
    start = time.perf_counter()
    rules, paths = {}, {}
    with one_thread():
        for label, (rule, options) in tqdm(CASES.items(), desc="dirac-gan", disable=not progress, dynamic_ncols=True):
            rules[label], paths[label] = study(rule, options, steps)
    settings = {"h": H, "start": START, "steps": steps, "conserved_below": CONSERVED, "loss": "minimax"}
    results = {"settings": settings, "seconds": round(time.perf_counter() - start, 1), "rules": rules}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(results, paths, run_dir / "figure.png")
    return results


def study(rule: str, options: dict[str, Any], steps: int) -> tuple[dict[str, Any], np.ndarray]:
    """One rule: its prediction, its trajectory and whether they agree."""
    prediction = predict(rule, options)
    path = trajectory(rule, options, steps)
    measured = growth_rate(path)
    record = {
        "rule": {"name": rule, **options},
        "predicted_rho": prediction.rho,
        "eigenvector_condition": prediction.kappa,
        "measured_rate": measured,
        "agrees": agrees(measured, prediction, steps),
        "verdict": verdict(prediction.rho),
    }
    return record, path


def table(results: dict[str, Any]) -> str:
    """One row per rule: ρ, the measured rate, how many steps change ‖v‖ by a factor e, the verdict."""
    s = results["settings"]
    lines = [
        "# Dirac-GAN: predicted spectral radius vs measured growth",
        "",
        f"Plain steps h = {s['h']} for both players, {s['steps']} steps from θ = φ = {s['start']}; "
        f"verdict from ρ (bounded: |ρ − 1| ≤ {s['conserved_below']:g}); {results['seconds']} s.",
        "",
        "| rule | predicted ρ | measured (‖v_K‖/‖v_0‖)^(1/K) | agrees | steps per factor e (1 / abs log ρ) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in results["rules"].items():
        log_rho = math.log(r["predicted_rho"])
        efold = f"{1 / abs(log_rho):.3g}" if log_rho else "∞"
        lines.append(
            f"| {label} | {r['predicted_rho']:.12f} | {r['measured_rate']:.12f} | {'yes' if r['agrees'] else 'NO'} "
            f"| {efold} | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], paths: dict[str, np.ndarray], path: Path) -> None:
    """One (θ, φ) panel per rule, then ‖v_k‖/‖v_0‖ against ρ^k, then log ρ predicted and measured."""
    labels = list(paths)
    columns = 3
    rows = math.ceil((len(labels) + 2) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.9 * rows), squeeze=False)
    flat = axes.ravel()
    for ax, label in zip(flat, labels, strict=False):
        _trajectory_panel(ax, paths[label], label, results["rules"][label])
    _norm_panel(flat[len(labels)], paths, results["rules"])
    _rate_panel(flat[len(labels) + 1], results["rules"])
    for ax in flat[len(labels) + 2 :]:
        ax.axis("off")
    s = results["settings"]
    fig.suptitle(f"Dirac-GAN, plain steps h = {s['h']}, {s['steps']} steps from θ = φ = {s['start']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _trajectory_panel(ax: plt.Axes, path: np.ndarray, label: str, rule: dict[str, Any]) -> None:
    """The path in units of the start (θ₀ = φ₀), coloured from early (yellow) to late (purple)."""
    scaled = path / START
    ax.plot(scaled[:, 0], scaled[:, 1], color="0.8", lw=0.5)
    ax.scatter(scaled[:, 0], scaled[:, 1], c=np.arange(len(path)), cmap="viridis_r", s=2, lw=0)
    ax.plot(*scaled[0], "o", color="C3", ms=5, label="start")
    ax.plot(0, 0, "k+", ms=10, label="equilibrium")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"{label}\nρ − 1 = {rule['predicted_rho'] - 1:.2e}: {rule['verdict']}", fontsize=9)
    ax.set_xlabel("θ / θ₀ (generator)", fontsize=8)
    ax.set_ylabel("φ / φ₀ (discriminator)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper right")


def _norm_panel(ax: plt.Axes, paths: dict[str, np.ndarray], rules: dict[str, Any]) -> None:
    """Measured distance to the equilibrium (solid) against ρ^k (dashed), log scale."""
    for i, (label, path) in enumerate(paths.items()):
        norms = np.linalg.norm(path, axis=1)
        k = np.arange(len(path))
        ax.plot(k, norms / norms[0], color=f"C{i}", lw=1, label=label)
        ax.plot(k, rules[label]["predicted_rho"] ** k, color=f"C{i}", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("step k", fontsize=8)
    ax.set_ylabel("‖v_k‖ / ‖v_0‖ (dashed: ρ^k)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=5.5, loc="upper left")


def _rate_panel(ax: plt.Axes, rules: dict[str, Any]) -> None:
    """log ρ per step (bars) and the measured log-rate (dots), on a symmetric log scale from 1e-11 to 1e-2."""
    labels = list(rules)
    y = np.arange(len(labels))
    predicted = [math.log(rules[label]["predicted_rho"]) for label in labels]
    measured = [math.log(rules[label]["measured_rate"]) for label in labels]
    ax.barh(y, predicted, color=["C3" if v > CONSERVED else "C2" if v < -CONSERVED else "0.5" for v in predicted])
    ax.plot(measured, y, "k.", label="measured")
    ax.set_xscale("symlog", linthresh=1e-11)
    ticks = [-1e-2, -1e-6, -1e-10, 0, 1e-10, 1e-6, 1e-2]
    ax.set_xticks(ticks, [f"{t:.0e}" if t else "0" for t in ticks], fontsize=6)
    ax.set_xlim(-0.1, 0.1)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_yticks(y, labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("log ρ per step: bars predicted, dots measured", fontsize=8)
    ax.legend(fontsize=6)
