"""Attention entropy collapse and σReparam (Zhai et al. 2023, "Stabilizing Transformer Training by Preventing
Attention Entropy Collapse"): a character transformer in their unstable setting — post-LN blocks, a short warm-up,
a constant learning rate, no gradient clipping — over a learning-rate grid reaching the unstable range × {plain
weights (the baseline), σReparam on every linear layer, QK layer-norm} × seeds, as one ``genbits.sweeps`` sweep per
variant on the ``lm-fortunes`` preset.

Every run logs, on logged steps, the attention entropy of each layer (its heads' mean; the diagnostics'
``attention_entropy/layerN``) and its training bits/char; the sweep evaluates its final validation bits/char. From
these, per run (thresholds fixed here before running):

  collapsed   some layer's entropy fell below ``COLLAPSE`` × the entropy of uniform causal attention over the
              block (mean over queries of log(i), i = 1..T): attention on about one position everywhere
  spike       a logged training bits/char more than ``SPIKE`` bits above the lowest logged before it
  failed      a non-finite loss stopped it, or its final validation bits/char is more than ``MARGIN`` bits above
              the best median of any (variant, learning rate) cell: it did not train
  failed at   its first spike, else its last logged step

The unstable range is every learning rate above the baseline's best one at which most baseline seeds fail.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genbits.errors import GenbitsError  # noqa: E402
from genbits.experiments.gan_images import markdown_table, spread_cell, verdict_lines  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.metrics.likelihood import bits_per_dim  # noqa: E402
from genbits.sweeps.sweep import run_sweep  # noqa: E402
from genbits.train.rundir import RunDir  # noqa: E402

PRESET = "lm-fortunes"
POOLED = True  # several runs at a time: --workers applies
WORKERS = 2  # runs at a time on a CPU, one torch thread each
LEARNING_RATES = ("0.001", "0.003", "0.01", "0.03", "0.1")
VARIANTS = {"baseline": ["model.weights=plain"], "sigma-reparam": ["model.weights=sigma-reparam"]}
VARIANTS |= {"qk-norm": ["model.qk_norm=true"]}
COLLAPSE = 0.1  # collapsed: a layer's entropy below this fraction of uniform causal attention's
SPIKE = 1.0  # bits/char above the running minimum of the logged training bits/char
MARGIN = 0.5  # failed: final validation bits/char more than this above the best cell's median
PRECEDES = 2 / 3  # share of the baseline's failures in the unstable range that collapse must precede
UNSTABLE = (
    "Zhai et al.'s setting: post-LN blocks, 10 warm-up steps, constant learning rate, AdamW, no gradient clipping"
)
CLAIM = "attention entropy collapse precedes the baseline's failures, and σReparam keeps entropy and training alive"
CONTROL = "plain weights (the baseline) at the same learning rates, steps and seeds; QK layer-norm reported beside"
RULE = (
    f"undecided at this budget if the baseline fails (non-finite loss, or final validation bits/char more than "
    f"{MARGIN} above the best cell's median) in most seeds at no learning rate above its best one; else holds if "
    f"collapse (a layer's attention entropy below {COLLAPSE} × uniform causal attention's) comes at or before the "
    f"failure (its first loss spike of > {SPIKE} bit/char above the running minimum, else its last logged step) in "
    f"at least {PRECEDES:.0%} of the baseline's failed runs at those learning rates, and at one of them every "
    f"σReparam seed trains without collapsing; fails otherwise"
)


@dataclass(frozen=True)
class Size:
    """Preset overrides and training steps of one size of a language-model study."""

    overrides: tuple[str, ...]
    steps: int

    def all_overrides(self, steps: int | None) -> list[str]:
        return [*self.overrides, f"train.steps={steps or self.steps}"]


TINY = (  # a 2-layer, 64-wide model on 32-character blocks: seconds per run on one CPU thread
    "model.width=64",
    "model.depth=2",
    "data.block_size=32",
    "train.batch_size=16",
    "train.threads=1",
    "train.eval_samples=500",
)
QUIET = ("train.sample_every=null", "train.log_every=10", "train.checkpoint_every=100000")
CPU = Size((*TINY, *QUIET), steps=400)
GPU = Size(  # untested on a GPU: a 6-layer, 256-wide model on 128-character blocks
    (
        "model.width=256",
        "model.depth=6",
        "model.heads=8",
        "data.block_size=128",
        "train.batch_size=64",
        "train.threads=0",
        "train.eval_samples=2000",
        *QUIET,
    ),
    steps=3000,
)
SETTING = ("model.norm_position=post", "optim.warmup_steps=10", "optim.schedule=constant", "optim.grad_clip=0")


def sweep_variants(
    run_dir: Path,
    variants: dict[str, list[str]],
    grid: dict[str, Sequence[str]],
    seeds: int,
    overrides: list[str],
    progress: bool,
    placement: Placement,
) -> list[dict[str, Any]]:
    """One resumable sweep of ``grid`` × seeds per variant in ``run_dir/sweep/<variant>``; every row gets its
    variant, run directory and summary (:func:`summarize`)."""
    rows = []
    for variant, extra in variants.items():
        sweep_dir = run_dir / "sweep" / variant
        result = run_sweep(
            PRESET,
            [f"{key}={','.join(values)}" for key, values in grid.items()],
            sweep_dir,
            seeds=seeds,
            overrides=[*overrides, *extra, *placement.overrides()],
            workers=placement.pool(WORKERS),
            progress=progress,
        )
        if result.interrupted:
            raise GenbitsError(f"the sweep in {sweep_dir} was interrupted; run the same command again to resume it")
        rows += [summarize(row | {"variant": variant, "path": sweep_dir / row["run"]}) for row in result.runs]
    return rows


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """What the study reads from one finished run: its curves from metrics.jsonl and its final validation
    bits/char (None when a non-finite loss stopped it)."""
    records = [r for r in RunDir(row["path"]).metrics() if "event" not in r and "loss" in r]
    block = int(RunDir(row["path"]).stored_config().data.options.get("block_size", 128))
    layers = sorted({k for r in records for k in r if k.startswith("attention_entropy/") and k.count("/") == 1})
    status = row["status"] or {}
    test_nll = status.get("final", {}).get("test_nll")
    return {
        "run": row["run"],
        "variant": row["variant"],
        "values": row["values"],
        "seed": row["seed"],
        "diverged": status.get("outcome") == "diverged",
        "val_bits_per_char": None if test_nll is None else bits_per_dim(test_nll, block),
        "steps": [r["step"] for r in records],
        "train_bits_per_char": [r["bits_per_char"] for r in records],
        "entropy": {layer.split("/")[1]: [r.get(layer, math.nan) for r in records] for layer in layers},
        "uniform_entropy": uniform_entropy(block),
    }


def uniform_entropy(block: int) -> float:
    """Entropy (nats) of uniform causal attention over a block, averaged over its queries: mean of log(i)."""
    return math.lgamma(block + 1) / block


def collapse_step(run: dict[str, Any]) -> int | None:
    """The first logged step at which some layer's entropy is below ``COLLAPSE`` × uniform attention's."""
    threshold = COLLAPSE * run["uniform_entropy"]
    for i, step in enumerate(run["steps"]):
        if any(curve[i] < threshold for curve in run["entropy"].values()):
            return step
    return None


def spike_steps(run: dict[str, Any]) -> list[int]:
    """Logged steps whose training bits/char is more than ``SPIKE`` above the lowest logged before them."""
    spikes, lowest = [], math.inf
    for step, value in zip(run["steps"], run["train_bits_per_char"], strict=True):
        if value > lowest + SPIKE or not math.isfinite(value):
            spikes.append(step)
        lowest = min(lowest, value)
    return spikes


def lr_of(run: dict[str, Any]) -> str:
    return f"{run['values']['optim.lr']:g}"


def cells(runs: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(variant, learning rate) → the seeds' runs."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        out.setdefault((run["variant"], lr_of(run)), []).append(run)
    return out


def median_bpc(group: list[dict[str, Any]]) -> float:
    """Median final validation bits/char over seeds, a diverged seed counting as +inf."""
    return statistics.median(math.inf if r["val_bits_per_char"] is None else r["val_bits_per_char"] for r in group)


def judged(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """Every run with collapse, spikes and failure added, and the best cell's median validation bits/char."""
    best = min(median_bpc(group) for group in cells(runs).values())
    if not math.isfinite(best):
        raise GenbitsError("every cell diverged: nothing trained; lower the learning rates")
    out = []
    for run in runs:
        spikes = spike_steps(run)
        bpc = run["val_bits_per_char"]
        failed = run["diverged"] or bpc is None or bpc > best + MARGIN
        failed_at = (spikes[0] if spikes else run["steps"][-1] if run["steps"] else 0) if failed else None
        marks = {"collapse_step": collapse_step(run), "spikes": spikes, "failed": failed, "failed_at": failed_at}
        out.append(run | marks)
    return out, best


def decide(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``RULE`` on judged runs."""
    by_cell = cells(runs)
    lrs = [f"{float(lr):g}" for lr in LEARNING_RATES]
    best_lr = min(lrs, key=lambda lr: median_bpc(by_cell["baseline", lr]))
    unstable = [
        lr
        for lr in lrs[lrs.index(best_lr) + 1 :]
        if 2 * sum(r["failed"] for r in by_cell["baseline", lr]) > len(by_cell["baseline", lr])
    ]
    failures = [r for lr in unstable for r in by_cell["baseline", lr] if r["failed"]]
    preceded = [r for r in failures if r["collapse_step"] is not None and r["collapse_step"] <= r["failed_at"]]

    def alive(variant: str) -> list[str]:
        dead = [lr for lr in unstable for r in by_cell[variant, lr] if r["failed"] or r["collapse_step"] is not None]
        return [lr for lr in unstable if lr not in dead]

    share = len(preceded) / len(failures) if failures else 0.0
    if not unstable:
        verdict = "undecided at this budget"
    else:
        verdict = "holds" if share >= PRECEDES and alive("sigma-reparam") else "fails"
    return {
        "verdict": verdict,
        "baseline_best_lr": best_lr,
        "unstable_lrs": unstable,
        "baseline_failures": len(failures),
        "collapse_preceded": len(preceded),
        "alive_where_baseline_fails": {variant: alive(variant) for variant in VARIANTS if variant != "baseline"},
    }


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Sweep every variant, judge every run, decide; writes entropy.png, table.md and results.json."""
    run_dir = Path(run_dir)
    size = GPU if full else CPU
    overrides = [*size.all_overrides(steps), *SETTING]
    grid = {"optim.lr": LEARNING_RATES}
    runs, best = judged(sweep_variants(run_dir, VARIANTS, grid, seeds, overrides, progress, placement))
    results = {
        "claim": CLAIM,
        "control": CONTROL,
        "rule": RULE,
        "setting": UNSTABLE,
        **decide(runs),
        "budget": {"seeds": seeds, "steps": steps or size.steps, "size": "full" if full else "cpu"},
        "best_median_val_bits_per_char": best,
        "runs": [{k: v for k, v in r.items() if k != "values"} | {"lr": lr_of(r)} for r in runs],
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    plot(results, run_dir / "entropy.png")
    return results


def table(results: dict[str, Any]) -> str:
    """Per variant and learning rate: failed, diverged, collapsed seeds, loss spikes, lowest entropy, final
    validation bits/char; then the decision's inputs and the verdict."""
    runs = results["runs"]
    body = []
    for variant in VARIANTS:
        for lr in (f"{float(lr):g}" for lr in LEARNING_RATES):
            group = [r for r in runs if (r["variant"], r["lr"]) == (variant, lr)]
            if not group:
                continue
            bpc = [r["val_bits_per_char"] for r in group if r["val_bits_per_char"] is not None]
            lowest = [min(min(c) for c in r["entropy"].values()) for r in group if r["entropy"]]
            body.append(
                [
                    variant,
                    lr,
                    f"{sum(r['failed'] for r in group)}/{len(group)}",
                    f"{sum(r['diverged'] for r in group)}/{len(group)}",
                    f"{sum(r['collapse_step'] is not None for r in group)}/{len(group)}",
                    f"{statistics.median(len(r['spikes']) for r in group):g}",
                    spread_cell(lowest, 2) if lowest else "–",
                    spread_cell(bpc, 2) if bpc else "–",
                ]
            )
    alive = results["alive_where_baseline_fails"]
    lines = [
        "# Attention entropy collapse × learning rate",
        "",
        f"{results['setting']}; {results['budget']['steps']} steps, {results['budget']['seeds']} seeds. Failed: "
        f"non-finite loss or final validation bits/char > {results['best_median_val_bits_per_char']:.2f} + {MARGIN} "
        f"(the best cell's median + margin). Collapsed: a layer's attention entropy < {COLLAPSE} × uniform causal "
        f"attention's ({COLLAPSE * runs[0]['uniform_entropy']:.2f} nats). Spikes: logged steps > {SPIKE} bit/char "
        "above the running minimum of the training bits/char. Entropy and bits/char: median [min, max] over seeds.",
        "",
        *markdown_table(
            [
                "variant",
                "lr",
                "failed",
                "diverged",
                "collapsed",
                "spikes",
                "lowest layer entropy (nats)",
                "final val bits/char",
            ],
            body,
        ),
        "",
        f"Baseline's best learning rate {results['baseline_best_lr']}; where most baseline seeds fail above it: "
        f"{', '.join(results['unstable_lrs']) or 'nowhere'}. Collapse at or before the failure in "
        f"{results['collapse_preceded']} of the baseline's {results['baseline_failures']} failed runs there. "
        + "; ".join(f"{v} alive there at: {', '.join(lrs) or 'none'}" for v, lrs in alive.items())
        + ".",
        "",
        *verdict_lines(results),
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Per variant: the lowest layer entropy over training of every run, coloured by learning rate (the collapse
    threshold dashed); last panel: final validation bits/char against learning rate (× marks a diverged seed)."""
    runs = results["runs"]
    lrs = [f"{float(lr):g}" for lr in LEARNING_RATES]
    colors = dict(zip(lrs, plt.cm.viridis([i / max(1, len(lrs) - 1) for i in range(len(lrs))]), strict=True))
    fig, axes = plt.subplots(1, len(VARIANTS) + 1, figsize=(4.2 * (len(VARIANTS) + 1), 3.6))
    for ax, variant in zip(axes, VARIANTS, strict=False):
        for r in (r for r in runs if r["variant"] == variant and r["entropy"]):
            lowest = [min(values) for values in zip(*r["entropy"].values(), strict=True)]
            label = f"lr {r['lr']}" if r["seed"] == 0 else None
            ax.plot(r["steps"], lowest, color=colors[r["lr"]], lw=0.9, label=label)
        ax.axhline(COLLAPSE * runs[0]["uniform_entropy"], color="k", ls="--", lw=0.8)
        ax.set(title=variant, xlabel="step", ylabel="lowest layer attention entropy (nats)", ylim=(0, None))
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    top = max((r["val_bits_per_char"] for r in runs if r["val_bits_per_char"] is not None), default=5.0) + 0.3
    for i, variant in enumerate(VARIANTS):
        for r in (r for r in runs if r["variant"] == variant):
            x = lrs.index(r["lr"]) + 0.1 * (i - 1)
            value = r["val_bits_per_char"]
            ax.plot(x, top if value is None else value, "x" if value is None else "o", color=f"C{i}", ms=4)
        ax.plot([], [], "o", color=f"C{i}", label=variant)
    ax.set_xticks(range(len(lrs)), lrs)
    ax.set(xlabel="learning rate", ylabel="final validation bits/char", title="× at the top: diverged")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
