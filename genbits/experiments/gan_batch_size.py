"""Batch size at a fixed budget of samples seen (the talk: "large batch sizes help" GANs, after BigGAN): the same
DCGAN and learning rate with batches of 16 to 512, each trained on the same number of samples (``train.samples``,
so a batch 8× larger takes 8× fewer steps), scored by final FID/KID on genbits' classifier features. The budget is
the preset's length at its own batch size (steps × 64 samples).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genbits.config import load_config  # noqa: E402
from genbits.experiments.gan_images import (  # noqa: E402
    PRESET,
    band,
    by_point,
    markdown_table,
    scores,
    size,
    spread,
    spread_cell,
    sweep,
)
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.runs import load_run  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
BATCH_SIZES = (16, 64, 256, 512)
Scores = dict[int, list[dict[str, float]]]  # batch size → one score dict per seed


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train every (batch size, seed) on the same sample budget; writes fid_vs_batch_size.png, table.md and
    results.json."""
    run_dir = Path(run_dir)
    chosen = size(full, steps)
    budget = chosen.steps * load_config(PRESET).train.batch_size
    grid = {"train.batch_size": [str(batch) for batch in BATCH_SIZES]}
    rows = by_point(sweep(run_dir, grid, seeds, [*chosen.overrides, f"train.samples={budget}"], progress, placement))
    final: Scores = {
        batch: [scores(load_run(row["path"]), chosen.eval_samples) for row in seeds_rows]
        for batch, seeds_rows in zip(BATCH_SIZES, rows, strict=True)
    }
    results = {
        "settings": {"batch_sizes": BATCH_SIZES, "samples": budget, "seeds": seeds},
        "runs": {str(batch): per_seed for batch, per_seed in final.items()},
        "final": {
            str(batch): {key: spread([s[key] for s in per_seed]) for key in ("fid", "kid")}
            for batch, per_seed in final.items()
        },
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(final, budget))
    figure(final, budget, run_dir / "fid_vs_batch_size.png")
    return results


def table(final: Scores, budget: int) -> str:
    body = [
        [
            batch,
            per_seed[0]["step"],
            spread_cell([s["fid"] for s in per_seed]),
            spread_cell([s["kid"] for s in per_seed], 2),
        ]
        for batch, per_seed in final.items()
    ]
    return "\n".join(
        [
            f"# Batch size at a fixed budget of {budget} samples seen",
            "",
            "Same learning rate for every batch size. FID/KID on genbits' classifier features (not Inception), "
            "median [min, max] over seeds.",
            "",
            *markdown_table(["batch", "steps", "final FID", "final KID"], body),
            "",
        ]
    )


def figure(final: Scores, budget: int, path: Path) -> None:
    """Final FID (left) and KID (right) against batch size: median over seeds, range, seeds as thin lines."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    batches = list(final)
    for ax, key in zip(axes, ("fid", "kid"), strict=True):
        per_seed_curves = [[final[batch][seed][key] for batch in batches] for seed in range(len(final[batches[0]]))]
        band(ax, batches, per_seed_curves, "C0", "")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"final {key.upper()} (genbits classifier features)")
        ax.set_title(f"after {budget} samples seen, same lr for every batch", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
