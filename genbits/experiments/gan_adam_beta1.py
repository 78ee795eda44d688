"""Adam's β1 for GANs (the talk: keep the momentum low, 0 or 0.5): the same DCGAN trained with β1 ∈ {0, 0.5, 0.9}
(β2 = 0.999, both players) over seeds, scored by FID/KID on genbits' classifier features at four points of
training, so the figure shows FID over training and the table the final values.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genbits.experiments.gan_images import (  # noqa: E402
    SEPARATED,
    band,
    by_point,
    checkpointed,
    final_spread,
    markdown_table,
    scores_over_training,
    separated,
    size,
    spread_cell,
    sweep,
    verdict_lines,
)
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.runs import load_run  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
BETA1 = (0.0, 0.5, 0.9)
BETA2 = 0.999
POINTS = 4  # evaluated checkpoints along each run
CLAIM = "a low Adam momentum (β1 = 0 or 0.5) trains the GAN to a lower final FID than β1 = 0.9"
CONTROL = "β1 = 0.9 (a common Adam default), same lr, steps and seeds"
RULE = f"the better of β1 = 0 and 0.5 (lower median final FID) against β1 = 0.9, final FID per seed: {SEPARATED}"


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train every (β1, seed), score its checkpoints; writes fid_over_training.png, table.md, results.json."""
    run_dir = Path(run_dir)
    chosen = size(full, steps)
    grid = {"optim.betas": [f"[{beta1},{BETA2}]" for beta1 in BETA1]}
    overrides = [*chosen.overrides_with_steps(), *checkpointed(chosen.steps, POINTS)]
    rows = by_point(sweep(run_dir, grid, seeds, overrides, progress, placement))
    curves = {
        beta1: [scores_over_training(load_run(row["path"]), chosen.eval_samples) for row in seeds_rows]
        for beta1, seeds_rows in zip(BETA1, rows, strict=True)
    }
    results = {
        "settings": {"beta1": BETA1, "beta2": BETA2, "seeds": seeds, "steps": chosen.steps},
        "curves": {f"{beta1:g}": seeds_curves for beta1, seeds_curves in curves.items()},
        "final": {f"{beta1:g}": final_spread(seeds_curves) for beta1, seeds_curves in curves.items()},
    }
    results |= {"claim": CLAIM, "control": CONTROL, "rule": RULE, "verdict": decide(results["curves"])}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(curves, run_dir / "fid_over_training.png")
    return results


def decide(curves: dict[str, list[list[dict[str, float]]]]) -> str:
    """``RULE`` on the final FIDs per seed (keys: β1 as written in results.json)."""
    final = {beta1: [curve[-1]["fid"] for curve in seeds_curves] for beta1, seeds_curves in curves.items()}
    low = min(("0", "0.5"), key=lambda beta1: statistics.median(final[beta1]))
    return separated(final[low], final["0.9"])


def table(results: dict[str, Any]) -> str:
    body = [
        [
            beta1,
            spread_cell([c[-1]["fid"] for c in seeds_curves]),
            spread_cell([c[-1]["kid"] for c in seeds_curves], 2),
            spread_cell([min(point["fid"] for point in c) for c in seeds_curves]),
        ]
        for beta1, seeds_curves in results["curves"].items()
    ]
    return "\n".join(
        [
            f"# Adam β1 (β2 = {BETA2:g})",
            "",
            f"{results['settings']['steps']} steps, {results['settings']['seeds']} seeds. "
            "FID/KID on genbits' classifier features (not Inception), median [min, max] over seeds; "
            "best FID: the lowest of the evaluations along each run.",
            "",
            *markdown_table(["β1", "final FID", "final KID", "best FID along the run"], body),
            "",
            *verdict_lines(results),
        ]
    )


def figure(curves: dict[float, list[list[dict[str, float]]]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (beta1, seeds_curves) in enumerate(curves.items()):
        steps = [point["step"] for point in seeds_curves[0]]
        fids = [[point["fid"] for point in curve] for curve in seeds_curves]
        band(ax, steps, fids, f"C{i}", f"β1 = {beta1:g}")
    ax.set_xlabel("training step")
    ax.set_ylabel("FID (genbits classifier features)")
    ax.set_title("median over seeds, min–max band, seeds as thin lines", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
