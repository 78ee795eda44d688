"""Which of NVAE's deep learning bits make a hierarchical VAE train (the talk: hierarchical VAEs are expressive but
hard to train; NVAE made them train with residual posteriors, spectral regularization, batch norm with a smaller
momentum, Swish, squeeze-and-excitation, KL warm-up and balancing, and a soft clamp)?

The ablation: the full model (every bit on, genbits.models.hvae), each bit removed in turn, and every bit removed
at once, × ``seeds`` × two Adamax learning rates (NVAE's 1e-2 and a higher one meant to provoke instability). Each
(variant, lr) is a ``genbits.sweeps`` sweep over seeds, one ordinary run each. Every finished run is scored on
held-out data: the ELBO's bits/dim (a bound on the discrete likelihood of the grey levels) and the KL per latent
group (a group with under ``COLLAPSED`` nats per image carries nothing: posterior collapse). A run *diverged* if
its loss became non-finite or exploded (the sweep's outcome), if its held-out ELBO is not finite, or if its KL blew
up (above ``BLOWUP`` × the full model's median KL at the same lr).

The claim is judged on the full model against the one without any bit, fixed before running (``RULE``); the table
then says, bit by bit, what removing it did at this budget.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from genbits.errors import GenbitsError  # noqa: E402
from genbits.experiments.gan_images import markdown_table, spread_cell  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.metrics.likelihood import bits_per_dim  # noqa: E402
from genbits.runs import load_run  # noqa: E402
from genbits.runs.evaluate import test_batch  # noqa: E402
from genbits.sweeps.sweep import run_sweep  # noqa: E402
from genbits.train.rundir import RunDir  # noqa: E402

POOLED = True
FULL, NONE = "full", "no bits"
BITS = {  # the bit → the overrides that remove it (NVAE's value is each option's default)
    "residual posterior": ["model.residual_posterior=false"],
    "spectral regularization": ["model.spectral_regularization=0"],
    "BN momentum 0.05": ["model.bn_momentum=0.1"],  # PyTorch's default
    "swish": ["model.activation=relu"],
    "squeeze-excitation": ["model.squeeze_excitation=false"],
    "KL warm-up": ["objective.warmup=0"],
    "KL balancing": ["objective.kl_balancing=false"],
    "soft clamp": ["model.soft_clamp=false"],
}
VARIANTS = {FULL: [], **{f"no {bit}": o for bit, o in BITS.items()}, NONE: [o for os in BITS.values() for o in os]}
LEARNING_RATES = {False: ("1e-2", "1e-1"), True: ("1e-2", "5e-2")}  # NVAE's lr and one that provokes instability
PRESETS = {False: "hvae-digits", True: "hvae-fmnist14"}
EVAL_IMAGES = {False: 500, True: 2000}
COLLAPSED = 0.01  # nats per image: a group below this carries no information
BLOWUP = 10.0  # KL blow-up: held-out KL above this × the full model's median at the same lr
MARGIN = 0.05  # bits/dim: a difference smaller than this is not a difference at this budget
CLAIM = "NVAE's bits make a hierarchical VAE train: with them it trains stably and reaches a better bound"
RULE = (
    f"holds if, at every lr, the full model diverges in no more runs than the model without any bit and, at some lr, "
    f"in fewer runs or with a median held-out bits/dim lower by more than {MARGIN}; fails if the model without bits "
    f"diverges in no more runs than the full model at every lr and its median bits/dim is within {MARGIN} of the "
    "full model's or better at every lr; otherwise undecided at this budget"
)


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train every (variant, lr, seed), score each run on held-out data, judge; writes results.json, table.md,
    curves.png."""
    run_dir = Path(run_dir)
    overrides = ["train.ema_decay=0", "train.sample_every=null", *placement.overrides()]
    overrides += [f"train.steps={steps}"] if steps else []
    runs = []
    for variant, removed in VARIANTS.items():
        for lr in LEARNING_RATES[full]:
            sweep_dir = run_dir / "sweeps" / f"{variant.replace(' ', '-')}-lr{lr}"
            result = run_sweep(
                PRESETS[full],
                [],
                sweep_dir,
                seeds=seeds,
                overrides=[*overrides, *removed, f"optim.lr={lr}"],
                workers=placement.pool(1),
                progress=progress,
            )
            if result.interrupted:
                raise GenbitsError(f"the sweep in {sweep_dir} was interrupted; run the same command again to resume")
            for row in result.runs:
                path = sweep_dir / row["run"]
                scores = scored(row, path, EVAL_IMAGES[full])
                runs.append({"variant": variant, "lr": lr, "seed": row["seed"], "path": str(path)} | scores)
    runs = flag_blowups(runs)
    results = {
        "claim": CLAIM,
        "rule": RULE,
        "settings": {"preset": PRESETS[full], "learning_rates": LEARNING_RATES[full], "seeds": seeds, "steps": steps},
        **decide(runs, LEARNING_RATES[full]),
        "runs": runs,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results, LEARNING_RATES[full]))
    curves(runs, LEARNING_RATES[full], run_dir / "curves.png")
    return results


@torch.no_grad()
def scored(row: dict[str, Any], path: Path, n: int) -> dict[str, Any]:
    """Outcome, wall time, and on ``n`` held-out images the ELBO's bits/dim and KL per group (eval mode, one z
    each)."""
    status = row["status"] or {}
    out: dict[str, Any] = {"outcome": status.get("outcome"), "wall_time": status.get("wall_time")}
    if out["outcome"] == "diverged":
        return out | {"bits_per_dim": None, "kl_per_group": None}
    fitted = load_run(path)
    x = test_batch(fitted, n).to(next(fitted.model.parameters()).dtype)
    parts = fitted.model.elbo_parts(x)
    elbo = parts.elbo().mean().item()
    bpd = bits_per_dim(-elbo, x[0].numel()) if math.isfinite(elbo) else None
    kl = [v.mean().item() for v in parts.kl_per_group().values()]
    return out | {"bits_per_dim": bpd, "kl_per_group": kl if all(map(math.isfinite, kl)) else None}


def flag_blowups(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``diverged`` to every run: a non-finite/exploded loss, a non-finite bound, or a KL blow-up."""
    for run in runs:
        reference = [sum(r["kl_per_group"]) for r in runs if r["variant"] == FULL and r["lr"] == run["lr"]]
        reference = [k for k in reference if k is not None]
        limit = BLOWUP * statistics.median(reference) if reference else math.inf
        kl = run["kl_per_group"]
        run["diverged"] = run["outcome"] == "diverged" or run["bits_per_dim"] is None or kl is None or sum(kl) > limit
    return runs


def cell(runs: list[dict[str, Any]], variant: str, lr: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["variant"] == variant and r["lr"] == lr]


def median_bpd(runs: list[dict[str, Any]]) -> float:
    """The median held-out bits/dim of the runs that did not diverge (inf if all did)."""
    values = [r["bits_per_dim"] for r in runs if not r["diverged"]]
    return statistics.median(values) if values else math.inf


def decide(runs: list[dict[str, Any]], learning_rates: tuple[str, ...]) -> dict[str, Any]:
    """The verdict of ``RULE`` from the full model's and the bit-less model's runs."""
    diverged = {v: [sum(r["diverged"] for r in cell(runs, v, lr)) for lr in learning_rates] for v in (FULL, NONE)}
    bpd = {v: [median_bpd(cell(runs, v, lr)) for lr in learning_rates] for v in (FULL, NONE)}
    steadier = all(f <= n for f, n in zip(diverged[FULL], diverged[NONE], strict=True))
    better_somewhere = any(
        f < n or bf < bn - MARGIN
        for f, n, bf, bn in zip(diverged[FULL], diverged[NONE], bpd[FULL], bpd[NONE], strict=True)
    )
    no_worse = all(n <= f for f, n in zip(diverged[FULL], diverged[NONE], strict=True)) and all(
        bn <= bf + MARGIN for bf, bn in zip(bpd[FULL], bpd[NONE], strict=True)
    )
    if steadier and better_somewhere:
        verdict = "holds"
    elif no_worse:
        verdict = "fails"
    else:
        verdict = "undecided at this budget"
    return {"diverged": diverged, "median_bits_per_dim": bpd, "verdict": verdict}


def table(results: dict[str, Any], learning_rates: tuple[str, ...]) -> str:
    """Per (variant, lr): runs diverged, held-out bits/dim, collapsed groups, wall time; then the verdict."""
    runs = results["runs"]
    body = []
    for variant in VARIANTS:
        for lr in learning_rates:
            rows = cell(runs, variant, lr)
            bpd = [r["bits_per_dim"] for r in rows if not r["diverged"]]
            kls = [r["kl_per_group"] for r in rows if not r["diverged"]]
            collapsed = [sum(k < COLLAPSED for k in kl) for kl in kls]
            groups = len(kls[0]) if kls else 0
            median_kl = [statistics.median(k[g] for k in kls) for g in range(groups)]
            body.append(
                [
                    variant,
                    lr,
                    f"{sum(r['diverged'] for r in rows)}/{len(rows)}",
                    spread_cell(bpd, 3) if bpd else "–",
                    " / ".join(f"{k:.2f}" for k in median_kl) or "–",
                    f"{statistics.median(collapsed):g}/{groups}" if kls else "–",
                    f"{statistics.median(r['wall_time'] for r in rows if r['wall_time'] is not None):.0f}",
                ]
            )
    settings = results["settings"]
    return "\n".join(
        [
            "# NVAE's bits, removed one at a time",
            "",
            f"Preset {settings['preset']}, {settings['seeds']} seeds per cell. Bits/dim: held-out ELBO "
            "(discrete likelihood of the grey levels), median [min, max] over the runs that did not diverge. "
            f"KL per group: held-out nats per image, top group first; collapsed: groups under {COLLAPSED} nats. "
            "Wall time: seconds per run on a shared CPU (noisy).",
            "",
            *markdown_table(
                ["variant", "lr", "diverged", "bits/dim", "KL per group", "collapsed", "wall s"],
                body,
            ),
            "",
            f"Claim: {results['claim']}. Rule (fixed before running): {results['rule']}.",
            f"Verdict: **{results['verdict']}**.",
            "",
        ]
    )


def curves(runs: list[dict[str, Any]], learning_rates: tuple[str, ...], path: Path) -> None:
    """Training ELBO (logged, per image) against step: one panel per lr, the median over seeds per variant."""
    fig, axes = plt.subplots(1, len(learning_rates), figsize=(6 * len(learning_rates), 4.5), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, lr in zip(axes[0], learning_rates, strict=True):
        for k, variant in enumerate(VARIANTS):
            by_step: dict[int, list[float]] = {}
            for r in cell(runs, variant, lr):
                for step, elbo in zip(*logged(r["path"]), strict=True):
                    by_step.setdefault(step, []).append(elbo)
            if not by_step:
                continue
            steps = sorted(by_step)  # a run that stopped early leaves the median to the others from there on
            style = "-" if variant in (FULL, NONE) else "--"
            median = [statistics.median(by_step[step]) for step in steps]
            ax.plot(steps, median, style, color=colours(k % 10), label=variant, lw=1.2)
        ax.set(title=f"Adamax lr {lr}", xlabel="step", ylabel="training ELBO (nats per image, median of seeds)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def logged(path: str) -> tuple[list[int], list[float]]:
    """(steps, training ELBO) from a run's metrics.jsonl; non-finite values dropped."""
    records = [r for r in RunDir(path).metrics() if "elbo" in r and math.isfinite(r["elbo"])]
    return [r["step"] for r in records], [r["elbo"] for r in records]
