"""Transformers need Adam (the talk; e.g. Zhang et al. 2020, "Why are Adaptive Methods Good for Attention
Models?"): the ``lm-fortunes`` character transformer (pre-LN, the preset's warm-up, cosine decay and gradient
clipping at 1) trained with Adam and with SGD with momentum 0.9, each over its own learning-rate grid × seeds, as
one ``genbits.sweeps`` sweep per optimizer, for the same number of steps on the same batches (weight decay off for
both, so the comparison is of the update rule alone).

Each optimizer is compared at its best learning rate, the grid point with the lowest median final validation
bits/char over seeds; a best learning rate on the edge of its grid means the sweep did not bracket it. The figure
shows the logged training bits/char (fresh batches of a corpus far larger than the characters seen) over training
at each optimizer's best learning rate, and the final validation bits/char against learning rate.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from genbits.experiments.gan_images import band, markdown_table, spread_cell, verdict_lines  # noqa: E402
from genbits.experiments.lm_entropy_collapse import CPU, GPU, cells, median_bpc, sweep_variants  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
OPTIMIZERS = {
    "adam": (["optim.optimizer=adam"], ("0.0003", "0.001", "0.003", "0.01", "0.03")),
    "sgd": (["optim.optimizer=sgd", "optim.momentum=0.9"], ("0.01", "0.03", "0.1", "0.3", "1", "3")),
}
SETTING = ("optim.weight_decay=0",)
LARGE = 0.5  # bits/char: a large gap
SMALL = 0.1  # bits/char: no real gap
CLAIM = "a transformer LM trains far better with Adam than with SGD with momentum at equal steps"
CONTROL = "SGD with momentum 0.9 at its own best learning rate, same model, steps, batches, schedule and clipping"
RULE = (
    f"each optimizer at its best learning rate (lowest median final validation bits/char over seeds): undecided at "
    f"this budget if either best lies on the edge of its grid; else holds if SGD's median exceeds Adam's by at least "
    f"{LARGE} bits/char and every Adam seed beats every SGD seed, fails if the gap is below {SMALL} bits/char, "
    f"else undecided at this budget"
)


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Sweep both optimizers, pick each one's best learning rate, decide; writes curves.png, table.md, results.json."""
    run_dir = Path(run_dir)
    size = GPU if full else CPU
    steps = steps or size.steps
    overrides = [*size.all_overrides(steps), *SETTING]
    runs = []
    for name, (extra, lrs) in OPTIMIZERS.items():
        runs += sweep_variants(run_dir, {name: extra}, {"optim.lr": lrs}, seeds, overrides, progress, placement)
    by_cell = cells(runs)
    best = {}
    for name, (_, lrs) in OPTIMIZERS.items():
        grid = [f"{float(lr):g}" for lr in lrs]
        lr = min(grid, key=lambda lr: median_bpc(by_cell[name, lr]))
        group = by_cell[name, lr]
        best[name] = {
            "lr": lr,
            "on_edge": lr in (grid[0], grid[-1]),
            "median_val_bits_per_char": median_bpc(group),
            "val_bits_per_char": [r["val_bits_per_char"] for r in group],
        }
    results = {
        "claim": CLAIM,
        "control": CONTROL,
        "rule": RULE,
        "verdict": decide(best),
        "budget": {"seeds": seeds, "steps": steps},
        "best": best,
        "gap_bits_per_char": best["sgd"]["median_val_bits_per_char"] - best["adam"]["median_val_bits_per_char"],
        "runs": [
            {k: r[k] for k in ("run", "variant", "seed", "diverged", "val_bits_per_char", "steps")}
            | {"lr": f"{r['values']['optim.lr']:g}", "train_bits_per_char": r["train_bits_per_char"]}
            for r in runs
        ],
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    plot(results, run_dir / "curves.png")
    return results


def decide(best: dict[str, dict[str, Any]]) -> str:
    """``RULE`` on each optimizer's best cell."""
    if best["adam"]["on_edge"] or best["sgd"]["on_edge"]:
        return "undecided at this budget"
    gap = best["sgd"]["median_val_bits_per_char"] - best["adam"]["median_val_bits_per_char"]
    adam, sgd = (
        [float("inf") if v is None else v for v in best[name]["val_bits_per_char"]] for name in ("adam", "sgd")
    )
    if gap >= LARGE and max(adam) < min(sgd):
        return "holds"
    if gap < SMALL:
        return "fails"
    return "undecided at this budget"


def table(results: dict[str, Any]) -> str:
    """Per optimizer and learning rate: diverged seeds and final validation bits/char; then the best of each."""
    body = []
    for name, (_, lrs) in OPTIMIZERS.items():
        for lr in (f"{float(lr):g}" for lr in lrs):
            group = [r for r in results["runs"] if (r["variant"], r["lr"]) == (name, lr)]
            bpc = [r["val_bits_per_char"] for r in group if r["val_bits_per_char"] is not None]
            mark = " (best)" if results["best"][name]["lr"] == lr else ""
            body.append(
                [
                    name,
                    lr + mark,
                    f"{sum(r['diverged'] for r in group)}/{len(group)}",
                    spread_cell(bpc, 2) if bpc else "–",
                ]
            )
    lines = [
        "# Adam vs SGD with momentum",
        "",
        f"{results['budget']['steps']} steps, {results['budget']['seeds']} seeds, both with the preset's warm-up, "
        "cosine decay and gradient clipping at 1, no weight decay. Final validation bits/char: median [min, max] "
        "over seeds.",
        "",
        *markdown_table(["optimizer", "lr", "diverged", "final val bits/char"], body),
        "",
        f"At their best learning rates SGD's median is {results['gap_bits_per_char']:.2f} bits/char above Adam's.",
        "",
        *verdict_lines(results),
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: training bits/char over steps at each optimizer's best learning rate (median, range, seeds); right:
    final validation bits/char against learning rate (median over seeds)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, best) in enumerate(results["best"].items()):
        group = [r for r in results["runs"] if (r["variant"], r["lr"]) == (name, best["lr"]) and not r["diverged"]]
        if group:
            length = min(len(r["steps"]) for r in group)
            curves = [r["train_bits_per_char"][:length] for r in group]
            band(left, group[0]["steps"][:length], curves, f"C{i}", f"{name}, lr {best['lr']}")
        lrs = sorted({r["lr"] for r in results["runs"] if r["variant"] == name}, key=float)
        medians = [
            statistics.median(
                np.inf if r["val_bits_per_char"] is None else r["val_bits_per_char"]
                for r in results["runs"]
                if (r["variant"], r["lr"]) == (name, lr)
            )
            for lr in lrs
        ]
        right.plot([float(lr) for lr in lrs], medians, "-o", color=f"C{i}", label=name)
    left.set(xlabel="step", ylabel="training bits/char", title="at each optimizer's best learning rate")
    right.set(xscale="log", xlabel="learning rate", ylabel="median final validation bits/char")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
