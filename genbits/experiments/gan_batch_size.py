"""Batch size (the talk: "large batch sizes help" GANs, after BigGAN), in two settings of the same DCGAN:

- fixed steps (BigGAN's setting): every batch size trains the preset's number of steps, so a batch 8× larger
  costs 8× the compute and sees 8× the samples. The claim is made here.
- fixed samples (the control): every batch size sees the same number of samples (``train.samples``: the preset's
  steps × its batch of 64), so a batch 8× larger takes 8× fewer steps. It separates "more data per step" from
  "more steps": whatever the fixed-steps gain is, this says how much of it is only compute.

Learning rate: the preset's (Adam 5e-3) for every batch size, not rescaled (BigGAN kept its learning rates as it
grew the batch); scored by final FID/KID on genbits' classifier features.
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
    SEPARATED,
    band,
    by_point,
    markdown_table,
    scores,
    separated,
    size,
    spread,
    spread_cell,
    sweep,
    verdict_lines,
)
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.runs import load_run  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
BATCH_SIZES = (16, 64, 256, 512)
FIXED_STEPS, FIXED_SAMPLES = "fixed steps", "fixed samples"
CLAIM = "at a fixed number of steps, the largest batch trains the GAN to a lower final FID than the smallest"
CONTROL = "the same batch sizes at a fixed number of samples seen (fewer steps for larger batches); same lr for all"
RULE = f"at fixed steps, the largest batch's final FID per seed against the smallest's: {SEPARATED}"
Scores = dict[int, list[dict[str, float]]]  # batch size → one score dict per seed


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train every (setting, batch size, seed); writes fid_vs_batch_size.png, table.md and results.json."""
    run_dir = Path(run_dir)
    chosen = size(full, steps)
    budget = chosen.steps * load_config(PRESET).train.batch_size
    grid = {"train.batch_size": [str(batch) for batch in BATCH_SIZES]}
    lengths = {FIXED_STEPS: f"train.steps={chosen.steps}", FIXED_SAMPLES: f"train.samples={budget}"}
    final: dict[str, Scores] = {}
    for setting, length in lengths.items():
        where = run_dir / setting.replace(" ", "-")
        rows = by_point(sweep(where, grid, seeds, [*chosen.overrides, length], progress, placement))
        final[setting] = {
            batch: [scores(load_run(row["path"]), chosen.eval_samples) for row in seeds_rows]
            for batch, seeds_rows in zip(BATCH_SIZES, rows, strict=True)
        }
    fixed = final[FIXED_STEPS]
    verdict = separated([s["fid"] for s in fixed[max(fixed)]], [s["fid"] for s in fixed[min(fixed)]])
    results = {
        "claim": CLAIM,
        "control": CONTROL,
        "rule": RULE,
        "verdict": verdict,
        "settings": {"batch_sizes": BATCH_SIZES, "steps": chosen.steps, "samples": budget, "seeds": seeds},
        "runs": {
            setting: {str(b): per_seed for b, per_seed in by_batch.items()} for setting, by_batch in final.items()
        },
        "final": {
            setting: {
                str(b): {key: spread([s[key] for s in per_seed]) for key in ("fid", "kid")}
                for b, per_seed in by_batch.items()
            }
            for setting, by_batch in final.items()
        },
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(final, results["settings"], run_dir / "fid_vs_batch_size.png")
    return results


def table(results: dict[str, Any]) -> str:
    body = [
        [
            setting,
            batch,
            per_seed[0]["step"],
            spread_cell([s["fid"] for s in per_seed]),
            spread_cell([s["kid"] for s in per_seed], 2),
        ]
        for setting, by_batch in results["runs"].items()
        for batch, per_seed in by_batch.items()
    ]
    s = results["settings"]
    return "\n".join(
        [
            "# Batch size at a fixed number of steps and at a fixed number of samples",
            "",
            f"Fixed steps: {s['steps']} steps for every batch; fixed samples: {s['samples']} samples seen. "
            f"{s['seeds']} seeds; the same learning rate for every batch size. FID/KID on genbits' classifier "
            "features (not Inception), median [min, max] over seeds.",
            "",
            *markdown_table(["setting", "batch", "steps", "final FID", "final KID"], body),
            "",
            *verdict_lines(results),
        ]
    )


def figure(final: dict[str, Scores], settings: dict[str, Any], path: Path) -> None:
    """Final FID (left) and KID (right) against batch size, one line per setting: median over seeds, range, seeds
    as thin lines."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, (setting, by_batch) in enumerate(final.items()):
        batches = list(by_batch)
        for ax, key in zip(axes, ("fid", "kid"), strict=True):
            per_seed = [[by_batch[b][seed][key] for b in batches] for seed in range(len(by_batch[batches[0]]))]
            band(ax, batches, per_seed, f"C{i}", setting)
    for ax, key in zip(axes, ("fid", "kid"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(BATCH_SIZES), [str(b) for b in BATCH_SIZES])
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"final {key.upper()} (genbits classifier features)")
        ax.set_title(f"{settings['steps']} steps, or {settings['samples']} samples seen; same lr", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
