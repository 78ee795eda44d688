"""The talk's "performance degrades later in training" (ODE-GAN's figure, Qin et al. 2020): on image GANs trained
by Adam gradient descent the score stops improving and gets worse late in training, while integrating the game's flow
with RK4 plus ODE-GAN's regularizer keeps improving. Here on Fashion-MNIST with the same DCGAN as the other image
studies, FID on genbits' classifier features every ``steps / POINTS`` steps, over seeds.

Arms (both simultaneous, as in ODE-GAN's code, whose Adam baseline runs the same update with an Euler step):

- Adam GD: ``gd`` with the preset's Adam (lr 5e-3, β = (0.5, 0.999): tuned for the CPU budget).
- RK4 + γ: ODE-GAN's CIFAR settings from its reference code (``cs_gan/main_ode.py``): plain steps h = 0.04 for both
  players after a warm-up (theirs: h/4 for 500 steps, then h; here a linear warm-up over 500 steps), the
  regularizer γ = 0.02 on the critic, and a fresh batch for every stage.

The CPU default (1,200 steps) shows the curves' start; the deciding setting is ``--full`` (28×28, width 64, 20,000
steps, FID every 500 steps), untested without a GPU.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genbits.experiments.gan_images import (  # noqa: E402
    band,
    checkpointed,
    markdown_table,
    scores_over_training,
    size,
    spread_cell,
    sweep,
    verdict_lines,
)
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.runs import load_run  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
ADAM, RK4 = "Adam GD", "RK4 + γ"
ARMS = {
    ADAM: ["optim.rule=gd"],
    RK4: [
        "optim.rule={name: ode, method: rk4, regularizer: 0.02, stages: fresh}",
        "optim.optimizer=sgd",
        "optim.lr=0.04",
        "optim.warmup_steps=500",
    ],
}
CPU_STEPS, FULL_STEPS = 1200, 20000
POINTS = {"cpu": 6, "full": 40}  # FID evaluations along each run
DEGRADED = 0.1  # a run degraded if its final FID is more than 10% above the best FID along it
CLAIM = "Adam GD's FID gets worse late in training while RK4 + the ODE-GAN regularizer's does not"
CONTROL = "RK4 + γ against Adam GD, same net, data, steps and seeds"
RULE = (
    f"per run, final FID / best FID along the run; over seeds, the median of that ratio per arm: holds if Adam's is "
    f"above {1 + DEGRADED:g} and RK4's is not; fails if RK4's is above {1 + DEGRADED:g} and at least Adam's; "
    f"otherwise undecided at this budget"
)
Curves = dict[str, list[list[dict[str, float]]]]  # arm → one FID curve per seed


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train both arms over seeds, score FID along every run; writes fid_over_training.png, table.md and
    results.json."""
    run_dir = Path(run_dir)
    chosen = size(full, steps or (FULL_STEPS if full else None), cpu_steps=CPU_STEPS)
    points = POINTS["full" if full else "cpu"]
    overrides = [*chosen.overrides_with_steps(), *checkpointed(chosen.steps, points)]
    curves: Curves = {}
    for arm, arm_overrides in ARMS.items():
        where = run_dir / "-".join(re.findall(r"[a-z0-9]+", arm.lower().replace("γ", "gamma")))
        rows = sweep(
            where,
            {"optim.optimizer": [optimizer(arm_overrides)]},
            seeds,
            [*overrides, *arm_overrides],
            progress,
            placement,
        )
        curves[arm] = [
            [
                {"step": p["step"], "fid": p["fid"]}
                for p in scores_over_training(load_run(row["path"]), chosen.eval_samples)
            ]
            for row in rows
        ]
    ratios = {arm: [degradation(curve) for curve in seeds_curves] for arm, seeds_curves in curves.items()}
    results = {
        "claim": CLAIM,
        "control": CONTROL,
        "rule": RULE,
        "verdict": decide(ratios),
        "settings": {"steps": chosen.steps, "seeds": seeds, "points": points, "arms": ARMS},
        "final_over_best": ratios,
        "curves": curves,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(curves, run_dir / "fid_over_training.png")
    return results


def optimizer(overrides: list[str]) -> str:
    """The arm's optimizer (the one-value grid key of its sweep), from its overrides or the preset's Adam."""
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("optim.optimizer=")), "adam")


def degradation(curve: list[dict[str, float]]) -> float:
    """Final FID / the best FID along the run (1 for a run that ends at its best)."""
    return curve[-1]["fid"] / min(p["fid"] for p in curve)


def decide(ratios: dict[str, list[float]]) -> str:
    """``RULE`` on the final / best FID ratios per seed."""
    adam, rk4 = (statistics.median(ratios[arm]) for arm in (ADAM, RK4))
    if adam > 1 + DEGRADED >= rk4:
        return "holds"
    if rk4 > 1 + DEGRADED and rk4 >= adam:
        return "fails"
    return "undecided at this budget"


def table(results: dict[str, Any]) -> str:
    body = [
        [
            arm,
            spread_cell([c[-1]["fid"] for c in seeds_curves]),
            spread_cell([min(p["fid"] for p in c) for c in seeds_curves]),
            spread_cell(results["final_over_best"][arm], 2),
        ]
        for arm, seeds_curves in results["curves"].items()
    ]
    s = results["settings"]
    return "\n".join(
        [
            "# Late degradation: Adam GD vs RK4 + γ",
            "",
            f"{s['steps']} steps, FID at {s['points']} checkpoints, {s['seeds']} seeds; FID on genbits' classifier "
            "features (not Inception), median [min, max] over seeds.",
            "",
            *markdown_table(["arm", "final FID", "best FID along the run", "final / best"], body),
            "",
            *verdict_lines(results),
        ]
    )


def figure(curves: Curves, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (arm, seeds_curves) in enumerate(curves.items()):
        steps = [p["step"] for p in seeds_curves[0]]
        band(ax, steps, [[p["fid"] for p in curve] for curve in seeds_curves], f"C{i}", arm)
    ax.set_xlabel("training step")
    ax.set_ylabel("FID (genbits classifier features)")
    ax.set_title("median over seeds, min–max band, seeds as thin lines", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
