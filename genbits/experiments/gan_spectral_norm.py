"""Spectral normalization widens the range of learning rates that train (the talk: SN "decreases learning rate
sensitivity"; Miyato et al. 2018): a sweep of Adam's learning rate over a log-spaced grid × the critic's
normalization (none, batch, spectral) × seeds.

The sweep is ``genbits.sweeps.sweep.run_sweep`` (resumable, one ordinary run per grid point and seed in
``sweep/``). A GAN's losses say little about its samples, so every finished run is scored by FID/KID on genbits'
classifier features, and the sweep's loss-based outcome is re-judged by FID.

Sensitivity cannot be won by not learning: it is the width, in decades, of the learning rates whose median final
FID is within ``FACTOR`` × the *global* best median FID (every grid point stands for the half decade around it), so
a norm that never trains has width 0. And a width only means something once each norm's best setting has finished
learning: its FID is scored at ``POINTS`` checkpoints, and a curve that still fell by more than ``STILL_FALLING``
over the last stretch makes the verdict "undecided at this budget".

The grid runs from 1e-4 (SN-GAN's range is 1e-4 … 1e-3) to 1e-1 in half decades. ``full`` adds SN-GAN's critic
steps (5 per generator step) as a second setting beside DCGAN's one.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from genbits.errors import GenbitsError
from genbits.experiments.gan_images import (
    Row,
    checkpointed,
    markdown_table,
    scores,
    scores_over_training,
    size,
    spread_cell,
    sweep,
    verdict_lines,
)
from genbits.experiments.placement import ON_CPU, Placement
from genbits.runs import load_run
from genbits.sweeps.report import plot_stability

POOLED = True  # several runs at a time: --workers applies
LEARNING_RATES = tuple(f"{10 ** (k / 2 - 4):.3g}" for k in range(7))  # 1e-4, 3.16e-4, …, 1e-1
DECADES_PER_POINT = 0.5
NORMS = ("none", "batch", "spectral")
CRITIC_STEPS = {"cpu": ("1",), "full": ("1", "5")}  # DCGAN's alternation; SN-GAN's n_dis = 5
FACTOR = 2.0  # trained: median final FID ≤ FACTOR × the global best median FID
POINTS = 4  # checkpoints scored along the best run of each norm
STILL_FALLING = 0.1  # a best curve whose FID fell by more than this fraction over its last stretch is still learning
CLAIM = "spectral normalization in the critic widens the range of learning rates that train"
CONTROL = "no critic normalization (batch norm in the critic reported beside it), same grid, steps and seeds"
RULE = (
    f"per critic-steps setting, the width in decades of the learning rates whose median final FID is within "
    f"{FACTOR:g}× the global best median ({DECADES_PER_POINT} decade per grid point): holds if spectral's width "
    f"exceeds no norm's, fails if it is smaller, else undecided; undecided at this budget as well if the best "
    f"learning rate of spectral or of no norm is still learning (its FID fell by more than {STILL_FALLING:.0%} "
    f"between the last two of {POINTS} checkpoints); over the settings: holds (fails) if every setting does"
)


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Sweep, score, re-judge, judge the claim, plot; writes stability.png, table.md and results.json."""
    run_dir = Path(run_dir)
    critic_steps = CRITIC_STEPS["full" if full else "cpu"]
    grid = {"optim.lr": LEARNING_RATES, "model.d_norm": NORMS, "optim.rule.n_critic": critic_steps}
    chosen = size(full, steps)
    overrides = [*chosen.overrides_with_steps(), *checkpointed(chosen.steps, POINTS)]
    rows = [scored(row, chosen.eval_samples) for row in sweep(run_dir, grid, seeds, overrides, progress, placement)]
    threshold = FACTOR * best_median_fid(rows)
    rows = [judged(row, threshold) for row in rows]
    plot_stability(rows, list(grid), "fid", run_dir / "stability.png")
    runs = [summary(row) for row in rows]
    settings = {}
    for n_critic in critic_steps:
        widths = {norm: width(runs, norm, n_critic, threshold) for norm in NORMS}
        best = {norm: best_curve(rows, runs, norm, n_critic, chosen.eval_samples) for norm in NORMS}
        settings[n_critic] = {"width_decades": widths, "best": best, "verdict": decide(widths, best)}
    verdicts = {s["verdict"] for s in settings.values()}
    results = {
        "claim": CLAIM,
        "control": CONTROL,
        "rule": RULE,
        "verdict": verdicts.pop() if len(verdicts) == 1 else "undecided at this budget",
        "settings": {"learning_rates": LEARNING_RATES, "norms": NORMS, "critic_steps": critic_steps},
        "budget": {"seeds": seeds, "steps": chosen.steps},
        "trained_fid_threshold": threshold,
        "by_critic_steps": settings,
        "runs": runs,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
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
        "n_critic": str(row["values"]["optim.rule.n_critic"]),
        "seed": row["seed"],
        "outcome": status.get("outcome"),
        "loss_outcome": status.get("loss_outcome"),
        "fid": final.get("fid"),
        "kid": final.get("kid"),
    }


def finite(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in runs if r[key] is not None]


def medians(runs: list[dict[str, Any]], norm: str, n_critic: str) -> dict[str, float]:
    """lr (as in the grid) → median final FID over seeds (inf where no seed has one: it diverged)."""
    return {lr: statistics.median(finite(cell(runs, n_critic, norm, lr), "fid") or [math.inf]) for lr in LEARNING_RATES}


def cell(runs: list[dict[str, Any]], n_critic: str, norm: str, lr: str) -> list[dict[str, Any]]:
    """The seeds' run summaries of one grid point."""
    return [r for r in runs if (r["n_critic"], r["d_norm"], r["lr"]) == (n_critic, norm, float(lr))]


def width(runs: list[dict[str, Any]], norm: str, n_critic: str, threshold: float) -> float:
    """Decades of learning rate whose median final FID is within the threshold."""
    return DECADES_PER_POINT * sum(m <= threshold for m in medians(runs, norm, n_critic).values())


def best_curve(rows: list[Row], runs: list[dict[str, Any]], norm: str, n_critic: str, n: int) -> dict[str, Any]:
    """The norm's best learning rate (lowest median final FID) and the FID over training of its seeds."""
    by_lr = medians(runs, norm, n_critic)
    lr = min(by_lr, key=by_lr.get)
    chosen = [
        row
        for row, r in zip(rows, runs, strict=True)
        if (r["d_norm"], r["n_critic"], r["lr"]) == (norm, n_critic, float(lr)) and r["fid"] is not None
    ]
    curves = [
        [{"step": p["step"], "fid": p["fid"]} for p in scores_over_training(load_run(row["path"]), n)] for row in chosen
    ]
    return {"lr": lr, "median_fid": by_lr[lr], "curves": curves, "still_learning": still_learning(curves)}


def still_learning(curves: list[list[dict[str, float]]]) -> bool:
    """Whether the median over seeds of the FID fell by more than ``STILL_FALLING`` between the last two
    checkpoints (no curve at all, e.g. every seed diverged, counts as not trained either)."""
    if not curves or len(curves[0]) < 2:
        return True
    last, before = (statistics.median(curve[i]["fid"] for curve in curves) for i in (-1, -2))
    return last < (1 - STILL_FALLING) * before


def decide(widths: dict[str, float], best: dict[str, dict[str, Any]]) -> str:
    """``RULE`` for one critic-steps setting."""
    if best["spectral"]["still_learning"] or best["none"]["still_learning"]:
        return "undecided at this budget"
    if widths["spectral"] > widths["none"]:
        return "holds"
    if widths["spectral"] < widths["none"]:
        return "fails"
    return "undecided at this budget"


def table(results: dict[str, Any]) -> str:
    """Per critic-steps setting and norm: median final FID at each lr, the width that trains, the best lr's FID
    over training; then every (setting, norm, lr) cell with its seeds."""
    threshold, runs = results["trained_fid_threshold"], results["runs"]
    lines = [
        "# Critic normalization × learning rate",
        "",
        f"{results['budget']['steps']} steps, {results['budget']['seeds']} seeds. Trained: median final FID ≤ "
        f"{threshold:.1f} ({FACTOR:g} × the global best median). FID/KID on genbits' classifier features "
        "(not Inception).",
        "",
    ]
    for n_critic, setting in results["by_critic_steps"].items():
        body = []
        for norm in NORMS:
            best = setting["best"][norm]
            curve = (
                " → ".join(
                    f"{statistics.median(c[i]['fid'] for c in best['curves']):.0f}"
                    for i in range(len(best["curves"][0]))
                )
                if best["curves"]
                else "–"
            )
            body.append(
                [
                    norm,
                    *(f"{m:.1f}" for m in medians(runs, norm, n_critic).values()),
                    f"{setting['width_decades'][norm]:g}",
                    f"{float(best['lr']):g}: {curve}" + (" (still learning)" if best["still_learning"] else ""),
                ]
            )
        lines += [
            f"**{n_critic} critic step(s) per generator step**: verdict {setting['verdict']}.",
            "",
            *markdown_table(
                [
                    "critic norm",
                    *(f"{float(lr):g}" for lr in LEARNING_RATES),
                    "decades trained",
                    "best lr: FID over training",
                ],
                body,
            ),
            "",
        ]
    cells = [
        [
            n_critic,
            norm,
            f"{float(lr):g}",
            f"{sum(r['outcome'] == 'converged' for r in group)}/{len(group)}",
            spread_cell(finite(group, "fid")) if finite(group, "fid") else "–",
        ]
        for n_critic in results["settings"]["critic_steps"]
        for norm in NORMS
        for lr in LEARNING_RATES
        if (group := cell(runs, n_critic, norm, lr))
    ]
    lines += [
        "Every cell, median [min, max] over seeds:",
        "",
        *markdown_table(["critic steps", "critic norm", "lr", "trained", "final FID"], cells),
        "",
        *verdict_lines(results),
    ]
    return "\n".join(lines)
