"""Spectral normalization widens the range of learning rates that train (the talk: SN "decreases learning rate
sensitivity"): a sweep of Adam's learning rate × the critic's normalization (none, batch, spectral) × seeds.

The sweep is ``genbits.sweeps.sweep.run_sweep`` (resumable, one ordinary run per grid point and seed in
``sweep/``). A GAN's losses say little about its samples (a critic that wins outright has the lowest loss), so
every finished run is scored by FID/KID on genbits' classifier features and the sweep's loss-based outcome is
re-judged by FID: a run *trained* if its final FID is within ``TOLERANCE`` × the best grid point's median FID.
The figure is the sweep stability plot (``genbits.sweeps.report.plot_stability``) of final FID, with "converged"
meaning trained; table.md adds per norm the ratio of the worst to the best median FID over the learning rates: the
sensitivity itself, whatever the threshold.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from genbits.errors import GenbitsError
from genbits.experiments.gan_images import Row, markdown_table, scores, size, spread_cell, sweep
from genbits.experiments.placement import ON_CPU, Placement
from genbits.runs import load_run
from genbits.sweeps.report import plot_stability

POOLED = True  # several runs at a time: --workers applies
LEARNING_RATES = ("2e-3", "1e-2", "5e-2")  # pilots: no critic norm trains at 2e-2 and dies at 5e-2
NORMS = ("none", "batch", "spectral")
TOLERANCE = 2.0  # trained: final FID ≤ TOLERANCE × the best grid point's median FID


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Sweep, score, re-judge, plot; writes stability.png, table.md and results.json."""
    run_dir = Path(run_dir)
    grid = {"optim.lr": LEARNING_RATES, "model.d_norm": NORMS}
    chosen = size(full, steps)
    rows = [
        scored(row, chosen.eval_samples)
        for row in sweep(run_dir, grid, seeds, chosen.overrides_with_steps(), progress, placement)
    ]
    threshold = TOLERANCE * best_median_fid(rows)
    rows = [judged(row, threshold) for row in rows]
    plot_stability(rows, list(grid), "fid", run_dir / "stability.png")
    results = {
        "settings": {"learning_rates": LEARNING_RATES, "norms": NORMS, "seeds": seeds, "steps": chosen.steps},
        "trained_fid_threshold": threshold,
        "runs": [summary(row) for row in rows],
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(rows, threshold))
    return results


def scored(row: Row, n: int) -> Row:
    """The row with final FID/KID added, for every finished run that did not stop on a non-finite loss."""
    status = row["status"]
    if status is None or status["outcome"] == "diverged":
        return row
    final = status["final"] | scores(load_run(row["path"]), n)
    return row | {"status": status | {"final": final}}


def fid_of(row: Row) -> float | None:
    status = row["status"]
    return status["final"].get("fid") if status else None


def best_median_fid(rows: list[Row]) -> float:
    """The lowest median FID over seeds of any grid point (seeds without an FID are left out)."""
    points: dict[str, list[float]] = {}
    for row in rows:
        if (fid := fid_of(row)) is not None:
            points.setdefault(row["point"], []).append(fid)
    if not points:
        raise GenbitsError("no run of the sweep finished with a finite loss: nothing to score")
    return min(statistics.median(values) for values in points.values())


def judged(row: Row, threshold: float) -> Row:
    """Outcome by FID: converged (trained) within the threshold, stalled above it; a diverged run stays diverged.
    The sweep's own loss-based outcome is kept as ``loss_outcome``."""
    status, fid = row["status"], fid_of(row)
    if fid is None:
        return row
    outcome = "converged" if fid <= threshold else "stalled"
    return row | {"status": status | {"outcome": outcome, "loss_outcome": status["outcome"]}}


def summary(row: Row) -> dict[str, Any]:
    status = row["status"] or {}
    final = status.get("final", {})
    return {
        "run": row["run"],
        "lr": row["values"]["optim.lr"],
        "d_norm": row["values"]["model.d_norm"],
        "seed": row["seed"],
        "outcome": status.get("outcome"),
        "loss_outcome": status.get("loss_outcome"),
        "fid": final.get("fid"),
        "kid": final.get("kid"),
    }


def cells(rows: list[Row]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(critic norm, lr) → the seeds' run summaries, in table order."""
    runs = [summary(row) for row in rows]
    return {
        (norm, lr): [r for r in runs if r["d_norm"] == norm and r["lr"] == float(lr)]
        for norm in NORMS
        for lr in LEARNING_RATES
    }


def finite(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in runs if r[key] is not None]


def table(rows: list[Row], threshold: float) -> str:
    """Per (critic norm, lr): seeds trained, final FID and KID; then per norm, how much the lr moves its FID."""
    by_cell = cells(rows)
    body = [
        [
            norm,
            lr,
            f"{sum(r['outcome'] == 'converged' for r in runs)}/{len(runs)}",
            spread_cell(finite(runs, "fid")) if finite(runs, "fid") else "–",
            spread_cell(finite(runs, "kid"), 2) if finite(runs, "kid") else "–",
        ]
        for (norm, lr), runs in by_cell.items()
    ]
    return "\n".join(
        [
            "# Critic normalization × learning rate",
            "",
            f"Trained: final FID ≤ {threshold:.1f} ({TOLERANCE:g} × the best grid point's median FID). "
            "FID/KID on genbits' classifier features (not Inception): median [min, max] over seeds.",
            "",
            *markdown_table(["critic norm", "lr", "trained", "final FID", "final KID"], body),
            "",
            "## Learning-rate sensitivity per critic norm",
            "",
            "Median final FID at each lr; worst / best: the ratio of the worst to the best of them.",
            "",
            *markdown_table(["critic norm", *LEARNING_RATES, "worst / best"], sensitivity(by_cell)),
            "",
        ]
    )


def sensitivity(by_cell: dict[tuple[str, str], list[dict[str, Any]]]) -> list[list[str]]:
    """Per norm: the median final FID at each lr and the worst / best ratio of those medians."""
    body = []
    for norm in NORMS:
        medians = [statistics.median(finite(by_cell[norm, lr], "fid") or [math.inf]) for lr in LEARNING_RATES]
        body.append([norm, *(f"{m:.1f}" for m in medians), f"{max(medians) / min(medians):.2f}"])
    return body
