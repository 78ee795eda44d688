"""RK4's step size for ``gan-mog``, chosen by a sweep at equal compute rather than by pilots: RK4 + ODE-GAN's
regularizer (γ = 0.07) at h ∈ ``STEPS_TRIED`` on both MoG toys, every h trained for the same number of steps (so the
same field evaluations, 4 per step; a larger h integrates further), scored like ``gan-mog`` (PacGAN's modes and
high-quality share at every checkpoint).

The claim checks ``gan-mog`` itself: its ``RK4_STEP`` per dataset is the h this sweep chooses by ``RULE``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from genbits.experiments.gan_mog import ALL, EVAL_SAMPLES, RK4_STEP, Arm, ode, spread, train_arms
from genbits.experiments.placement import ON_CPU, Placement

POOLED = True  # several runs at a time: --workers applies
STEPS_TRIED = (0.05, 0.1, 0.2, 0.3, 0.6)
CLAIM = "gan-mog's RK4 step on each dataset is the best h of an equal-compute sweep"
CONTROL = "the other step sizes, same steps (field evaluations), seeds and regularizer"
RULE = (
    "per dataset, the chosen h has the highest median over seeds of modes captured at the last checkpoint (ties: the "
    "higher median % high quality there, then the smaller h); holds if it is gan-mog's RK4_STEP on every dataset, "
    "fails otherwise"
)


def label(h: float) -> str:
    return f"h={h:g}"


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train RK4 at every h on both datasets; writes table.md and results.json."""
    arms = {label(h): Arm({d: ode("rk4", h) for d in ALL}) for h in STEPS_TRIED}
    results = train_arms(Path(run_dir), arms, seeds, steps, full, placement, progress)
    chosen = {dataset: choose(by_h) for dataset, by_h in results.items()}
    verdict = "holds" if all(chosen[d] == RK4_STEP[d] for d in chosen) else "fails"
    out = {
        "claim": CLAIM,
        "control": CONTROL,
        "rule": RULE,
        "verdict": verdict,
        "chosen": chosen,
        "in_gan_mog": {d: RK4_STEP[d] for d in chosen},
        "settings": {"seeds": seeds, "steps": {d: r[label(STEPS_TRIED[0])]["steps"] for d, r in results.items()}},
        "eval_samples": EVAL_SAMPLES,
        "datasets": results,
    }
    (Path(run_dir) / "results.json").write_text(json.dumps(out, indent=2))
    (Path(run_dir) / "table.md").write_text(table(out))
    return out


def choose(by_h: dict[str, dict[str, Any]]) -> float:
    """``RULE``'s choice among the arms of one dataset."""

    def key(h: float) -> tuple[float, float, float]:
        end = by_h[label(h)]["end"]
        return (statistics.median(p["modes"] for p in end), statistics.median(p["high_quality"] for p in end), -h)

    return max(STEPS_TRIED, key=key)


def table(results: dict[str, Any]) -> str:
    lines = [
        "# RK4's step size at equal compute",
        "",
        f"{results['settings']['seeds']} seeds; steps: "
        + ", ".join(f"{d} {n}" for d, n in results["settings"]["steps"].items())
        + "; median (min–max) over seeds.",
        "",
        "| dataset | h | modes, end | % HQ, end | modes, best | % HQ, best |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, by_h in results["datasets"].items():
        for h, r in by_h.items():
            cells = [
                spread([p["modes"] for p in r["end"]], "{:g}"),
                spread([100 * p["high_quality"] for p in r["end"]], "{:.0f}"),
                spread([p["modes"] for p in r["best"]], "{:g}"),
                spread([100 * p["high_quality"] for p in r["best"]], "{:.0f}"),
            ]
            lines.append(f"| {dataset} | {h} | " + " | ".join(cells) + " |")
    chosen = ", ".join(f"{d} h = {h:g} (gan-mog: {results['in_gan_mog'][d]:g})" for d, h in results["chosen"].items())
    lines += [
        "",
        f"Chosen: {chosen}.",
        "",
        f"Claim: {results['claim']}. Control: {results['control']}. Rule (fixed before running): {results['rule']}. "
        f"Verdict: **{results['verdict']}**.",
    ]
    return "\n".join(lines) + "\n"
