"""Is diffusion training much more stable than GAN training? (The talk: the denoising loss is a regression "to a
unit Gaussian sample", a dense learning signal, unlike a two-player game.)

Two families, matched where it can be: the DCGAN of the ``gan-fmnist14`` preset (width 16, ~69k parameters in G and D
together) and an unconditional DDPM on the same 14×14 Fashion-MNIST (the ``diffusion-fmnist14`` UNet at 8 channels,
~76k parameters; ``--full``: 28×28, DCGAN width 64 ≈ 1.73M vs UNet 40 channels ≈ 1.86M), the same batch and steps
(so the same training images seen), the same Adam learning-rate grid and seeds, EMA off for both (the optimizer's
own iterates are judged) and neither with warm-up or gradient clipping (the diffusion preset's warm-up and clipping
are removed: they would hide a learning rate that is too large). Each keeps its own Adam β (DCGAN's β1 = 0.5, the
default 0.9 for the UNet) and its own network. Every (family, lr, seed) is one run of a ``genbits.sweeps`` sweep;
every finished run is scored by FID on genbits' classifier features (``gan_images.scores``; diffusion samples by
DDIM with few steps, the same for every run).

Three measures per family:

- **trains**: a run trains if its loss stayed finite (the sweep did not judge it diverged) and its final FID is at
  most ``FACTOR`` × the family's best median FID over the grid and below ``UNTRAINED`` × the FID of the family's
  untrained model (scored at step 0), so that a family cannot win by all runs being equally bad;
- **FID spread**: (max − min) / median of final FID over seeds at a grid point where no seed diverged; the family's
  spread is the median over those points;
- **roughness** of the loss curve: the median over consecutive logged steps of |Δ log loss| (the GAN's critic loss,
  the diffusion's denoising loss; single-batch losses logged every 20 steps). Reported, not judged: the denoising
  loss of one batch is noisy by design (random t per example), so its roughness measures the estimator as much as
  the training.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genbits.experiments.gan_images import GPU as GAN_GPU  # noqa: E402
from genbits.experiments.gan_images import PRESET as GAN_PRESET  # noqa: E402
from genbits.experiments.gan_images import (  # noqa: E402
    Row,
    markdown_table,
    scores,
    size,
    spread_cell,
    sweep,
    verdict_lines,
)
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.runs import load_run  # noqa: E402
from genbits.train import checkpoint  # noqa: E402
from genbits.train.rundir import RunDir  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
LEARNING_RATES = ("1e-4", "3.16e-4", "1e-3", "3.16e-3", "1e-2", "3.16e-2", "1e-1")
CPU_LEARNING_RATES = LEARNING_RATES[1:6]  # half decades 3.16e-4 … 3.16e-2: the CPU budget
FACTOR = 2.0  # trained: final FID ≤ FACTOR × the family's best median FID
UNTRAINED = 0.5  # … and below this fraction of the family's untrained FID
MARGIN = 0.25  # "much more stable": at least this much larger a fraction of runs that train
# the default trailing spacing, from t = T, with x̂₀ clipped to the image range (genbits/sampling/clipping.py)
CPU_SAMPLER = {"sampler": "ddim", "steps": 10}
GPU_SAMPLER = {"sampler": "ddim", "steps": 50}
CLAIM = "diffusion training is much more stable than GAN training (matched parameters, samples seen, lr grid, seeds)"
CONTROL = "the DCGAN of gan-fmnist14 on the same data, learning rates, steps, batch and seeds"
RULE = (
    f"a run trains if its loss stayed finite and its final FID ≤ {FACTOR:g} × its family's best median FID and < "
    f"{UNTRAINED:g} × its family's untrained FID; holds if the fraction of diffusion runs that train exceeds the "
    f"GAN's by ≥ {MARGIN:g} and diffusion's FID spread across seeds ((max − min) / median, median over grid points "
    "without a diverged seed) is below the GAN's; fails if diffusion's fraction is not above the GAN's and its spread "
    "is not below; else undecided at this budget"
)


@dataclass(frozen=True)
class Family:
    """One side of the comparison: a preset, the overrides that match it to the other, the loss judged."""

    name: str
    preset: str
    overrides: tuple[str, ...]
    loss_key: str
    how: dict[str, Any] | None = None  # sampling options for scoring


GAN = Family("gan", GAN_PRESET, (), "loss/discriminator")
DIFFUSION = Family(
    "diffusion",
    "diffusion-fmnist14",
    (
        "model.conditional=false",
        "objective.p_uncond=0",
        "model.net_options.channels=8",
        "optim.warmup_steps=0",
        "optim.grad_clip=0",
        "train.ema_decay=0",
        "train.log_every=20",
    ),
    "loss",
    CPU_SAMPLER,
)
# 28×28 (UNet levels 28, 14, 7), on the GPU's threads: 40 channels ≈ 1.86M parameters vs the width-64 DCGAN's 1.73M
GPU_DIFFUSION = ("data.size=0", "train.threads=0", "model.net_options.channels=40", "model.net_options.attention=[7]")


def families(full: bool) -> tuple[Family, Family]:
    """The two families at the CPU size, or at ``full``'s (GAN: gan_images' GPU size)."""
    if not full:
        return GAN, DIFFUSION
    gan = replace(GAN, overrides=(*GAN.overrides, *GAN_GPU.overrides))
    return gan, replace(DIFFUSION, overrides=(*DIFFUSION.overrides, *GPU_DIFFUSION), how=GPU_SAMPLER)


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Sweep both families, score, judge, plot; writes stability.png, table.md and results.json."""
    run_dir = Path(run_dir)
    chosen = size(full, steps)
    lrs = LEARNING_RATES if full else CPU_LEARNING_RATES
    summaries = {}
    for family in families(full):
        # checkpoints at step 0 (the untrained model) and at the end only
        overrides = [f"train.steps={chosen.steps}", f"train.checkpoint_every={chosen.steps}", *family.overrides]
        rows = sweep(
            run_dir / family.name,
            {"optim.lr": lrs},
            seeds,
            overrides,
            progress,
            placement,
            preset=family.preset,
            loss_key=family.loss_key,
        )
        summaries[family.name] = summarize(rows, family, chosen.eval_samples)
    results = {
        "claim": CLAIM,
        "control": CONTROL,
        "rule": RULE,
        "verdict": decide(summaries["diffusion"], summaries["gan"]),
        "settings": {"learning_rates": lrs, "factor": FACTOR, "untrained": UNTRAINED, "margin": MARGIN},
        "budget": {"seeds": seeds, "steps": chosen.steps, "batch_size": 64, "eval_samples": chosen.eval_samples},
        "families": summaries,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(results, run_dir / "stability.png")
    return results


def summarize(rows: list[Row], family: Family, n: int) -> dict[str, Any]:
    """Per run: lr, seed, sweep outcome, final FID, roughness, loss curve; then the family's three measures."""
    runs = [scored(row, family, n) for row in rows]
    untrained = untrained_fid(rows[0]["path"], family, n)
    medians = {lr: statistics.median(fids) for lr, fids in by_lr(runs).items() if fids}
    best = min(medians.values()) if medians else math.inf
    for r in runs:
        r["trains"] = r["fid"] is not None and r["fid"] <= FACTOR * best and r["fid"] < UNTRAINED * untrained
    spreads = [
        (max(fids) - min(fids)) / statistics.median(fids)
        for lr, fids in by_lr(runs).items()
        if fids and all(r["outcome"] != "diverged" and r["fid"] is not None for r in runs if r["lr"] == lr)
    ]
    roughs = [r["roughness"] for r in runs if r["roughness"] is not None]
    params = sum(p.numel() for p in load_run(rows[0]["path"]).model.parameters())
    return {
        "preset": family.preset,
        "overrides": list(family.overrides),
        "sampling": family.how,
        "parameters": params,
        "untrained_fid": untrained,
        "best_median_fid": best,
        "median_fid_by_lr": {f"{lr:g}": m for lr, m in medians.items()},
        "trained_fraction": sum(r["trains"] for r in runs) / len(runs),
        "fid_spread": statistics.median(spreads) if spreads else None,
        "roughness": statistics.median(roughs) if roughs else None,
        "runs": runs,
    }


def scored(row: Row, family: Family, n: int) -> dict[str, Any]:
    """A run's summary: final FID (None if it diverged or scored non-finite) and its loss curve's roughness."""
    status = row["status"] or {}
    outcome = status.get("outcome")
    logged = [(r["step"], r[family.loss_key]) for r in RunDir(row["path"]).metrics() if family.loss_key in r]
    losses = [loss for _, loss in logged]
    fid = None
    if outcome is not None and outcome != "diverged":
        value = scores(load_run(row["path"]), n, family.how)["fid"]
        fid = value if math.isfinite(value) else None
    return {
        "run": row["run"],
        "lr": float(row["values"]["optim.lr"]),
        "seed": row["seed"],
        "outcome": outcome,
        "fid": fid,
        "roughness": roughness(losses),
        "curve": [[step, loss if math.isfinite(loss) else None] for step, loss in logged],
    }


def roughness(losses: list[float]) -> float | None:
    """Median |Δ log loss| between consecutive logged steps; None if a loss is non-positive or non-finite."""
    if len(losses) < 2 or not all(math.isfinite(x) and x > 0 for x in losses):
        return None
    return statistics.median(abs(math.log(b) - math.log(a)) for a, b in zip(losses, losses[1:], strict=False))


def by_lr(runs: list[dict[str, Any]]) -> dict[float, list[float]]:
    """lr → the finite final FIDs of its seeds, in grid order."""
    out: dict[str, list[float]] = {}
    for r in runs:
        out.setdefault(r["lr"], [])
        if r["fid"] is not None:
            out[r["lr"]].append(r["fid"])
    return out


def untrained_fid(path: Path, family: Family, n: int) -> float:
    """FID of the family's model at step 0 (the run's first checkpoint): what 'not trained at all' scores."""
    fitted = load_run(path)
    first = checkpoint.list_checkpoints(RunDir(path).checkpoints)[0]
    _, state = checkpoint.load(first, fitted.config.hash())
    fitted.model.load_state_dict(state["model"])
    return scores(replace(fitted, step=0), n, family.how)["fid"]


def decide(diffusion: dict[str, Any], gan: dict[str, Any]) -> str:
    """``RULE`` on the two families' summaries (a family without a spread counts as infinitely spread)."""
    more = diffusion["trained_fraction"] - gan["trained_fraction"]
    spread_d, spread_g = (s["fid_spread"] if s["fid_spread"] is not None else math.inf for s in (diffusion, gan))
    if more >= MARGIN and spread_d < spread_g:
        return "holds"
    if more <= 0 and spread_d >= spread_g:
        return "fails"
    return "undecided at this budget"


def number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    budget, lrs = results["budget"], results["settings"]["learning_rates"]
    fams = results["families"]
    summary = [
        [
            name,
            f"{f['parameters']:,}",
            f"{sum(r['trains'] for r in f['runs'])}/{len(f['runs'])} = {f['trained_fraction']:.2f}",
            number(f["fid_spread"]),
            number(f["roughness"], 3),
            number(f["best_median_fid"], 1),
            number(f["untrained_fid"], 1),
        ]
        for name, f in fams.items()
    ]
    cells = []
    for name, f in fams.items():
        for lr in lrs:
            group = [r for r in f["runs"] if r["lr"] == float(lr)]
            fids = [r["fid"] for r in group if r["fid"] is not None]
            roughs = [r["roughness"] for r in group if r["roughness"] is not None]
            cells.append(
                [
                    name,
                    f"{float(lr):g}",
                    f"{sum(r['trains'] for r in group)}/{len(group)}",
                    f"{sum(r['outcome'] == 'diverged' for r in group)}",
                    spread_cell(fids) if fids else "–",
                    spread_cell(roughs, 3) if roughs else "–",
                ]
            )
    lines = [
        "# Diffusion vs GAN: stability over a learning-rate grid",
        "",
        f"{budget['steps']} steps × batch {budget['batch_size']} (the same training images seen), "
        f"{budget['seeds']} seeds, Adam lr ∈ {{{', '.join(f'{float(lr):g}' for lr in lrs)}}}; FID of "
        f"{budget['eval_samples']} samples on genbits' classifier features (not Inception); diffusion sampled by "
        f"{fams['diffusion']['sampling']}.",
        "",
        *markdown_table(
            [
                "family",
                "parameters",
                "runs that train",
                "FID spread (max−min)/median",
                "roughness (median |Δ log loss|)",
                "best median FID",
                "untrained FID",
            ],
            summary,
        ),
        "",
        "Every grid point, median [min, max] over seeds:",
        "",
        *markdown_table(["family", "lr", "train", "diverged", "final FID", "roughness"], cells),
        "",
        *verdict_lines(results),
    ]
    return "\n".join(lines)


def figure(results: dict[str, Any], path: Path) -> None:
    """Final FID / family's best median vs lr (seeds as dots), the loss curves at each family's best lr, and the
    roughness vs lr."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    lrs = [float(lr) for lr in results["settings"]["learning_rates"]]
    for i, (name, f) in enumerate(results["families"].items()):
        color, best = f"C{i}", f["best_median_fid"]
        for r in f["runs"]:
            if r["fid"] is not None:
                left.scatter(r["lr"], r["fid"] / best, color=color, s=14, alpha=0.6)
            else:
                left.scatter(r["lr"], 0.97, color=color, marker="x", transform=left.get_xaxis_transform())
        medians = {float(lr): m for lr, m in f["median_fid_by_lr"].items()}
        left.plot(list(medians), [m / best for m in medians.values()], "-o", color=color, label=name)
        best_lr = min(medians, key=medians.get) if medians else None
        for r in f["runs"]:
            if r["lr"] == best_lr:
                middle.plot(*zip(*r["curve"], strict=True), color=color, alpha=0.7, lw=0.9)
        middle.plot([], [], color=color, label=f"{name}, lr {best_lr:g}")
        roughs = [(r["lr"], r["roughness"]) for r in f["runs"] if r["roughness"] is not None]
        if roughs:
            right.scatter(*zip(*roughs, strict=True), color=color, s=14, label=name)
    left.axhline(FACTOR, color="k", ls=":", lw=1, label=f"{FACTOR:g} × best (trains below)")
    left.set(xscale="log", yscale="log", xlabel="Adam lr", ylabel="final FID / family's best median FID")
    left.set_title("× on top: diverged", fontsize=9)
    middle.set(yscale="log", xlabel="step", ylabel="logged loss (one batch)", title="seeds at each family's best lr")
    right.set(xscale="log", xlabel="Adam lr", ylabel="median |Δ log loss|", title="loss-curve roughness")
    for ax in (left, middle, right):
        ax.legend(fontsize=8)
    left.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    left.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
