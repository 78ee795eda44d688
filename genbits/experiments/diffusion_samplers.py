"""Few-step samplers vs 1000-step ancestral sampling on one trained diffusion model, and on the exact denoiser.

One model (the ``diffusion-ring`` preset: DDPM on the ring of 8 Gaussians) is trained once and sampled many ways:
every sampler at several NFE (network evaluations), each scored by FID on the raw coordinates against held-out data
(the family's default sample metric on 2-D data), with the share of samples near a mode and of samples far from
the ring beside it. The exact-score study drives the same samplers with the closed-form denoiser of the ring (a
mixture of isotropic Gaussians, ``sampling/exact.py``): what remains there is discretization error alone, so the
gap between the two studies is what the network's errors cost each sampler.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from genbits.config import load_config  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.metrics.fid import fid  # noqa: E402
from genbits.metrics.modes import mode_coverage  # noqa: E402
from genbits.models.diffusion import Diffusion  # noqa: E402
from genbits.runs import load_run  # noqa: E402
from genbits.runs.evaluate import test_batch  # noqa: E402
from genbits.sampling.exact import mixture_eps  # noqa: E402
from genbits.sampling.samplers import SAMPLER_FUNCTIONS, grid_size  # noqa: E402
from genbits.train import train  # noqa: E402

PRESET = "diffusion-ring"
REFERENCE = ("ddpm", 1000)
NFES = {
    "ddpm": [10, 25, 100, 1000],
    "ddim": [5, 10, 25, 50, 100],
    "heun": [5, 9, 25, 49],
    "dpm-solver++": [5, 10, 25, 50],
}
FULL_NFES = {name: sorted({*nfes, 250, 500}) for name, nfes in NFES.items()}
FEW = 25  # "few steps": at most this many network evaluations
WITHIN, BEYOND = 1.10, 1.50  # ratios to the reference FID that decide the claim
SLACK = 0.005  # FID between two independent 2,000-sample draws of the ring is of this order (the control measures it)
FAR = 3.0  # a sample farther than this from the origin is off the ring (radius 2) by more than 50 std
CLAIM = f"a sampler at <= {FEW} NFE matches 1000-step ancestral sampling's FID within {WITHIN - 1:.0%}"
RULE = (
    f"holds if the best sampler at <= {FEW} NFE has FID <= {WITHIN} x FID(ddpm, 1000) + {SLACK} on the trained "
    f"model; fails if even the best is above {BEYOND} x FID(ddpm, 1000) + {SLACK}; otherwise undecided at this budget"
)


@torch.no_grad()
def exact_samples(model: Diffusion, dataset: Any, sampler: str, nfe: int, n: int, seed: int) -> torch.Tensor:
    """Samples of the ring's closed-form denoiser through ``sampler`` on the model's own schedule and spacing."""
    times = model.schedule.grid(grid_size(sampler, nfe))
    alpha_bars = model.schedule.alpha_bar(times)
    centres = dataset.centres.double()
    covs = (dataset.std**2 * torch.eye(2, dtype=torch.float64)).expand(len(centres), 2, 2)
    eps = mixture_eps(dataset.weights.double(), centres, covs, alpha_bars)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, dtype=torch.float64, generator=generator)
    return SAMPLER_FUNCTIONS[sampler](eps, x, alpha_bars, generator=generator).float()


def score(samples: torch.Tensor, real: torch.Tensor, dataset: Any) -> dict[str, float]:
    modes = mode_coverage(samples, dataset.centres, dataset.std)
    return {
        "fid": fid(real, samples),
        "high_quality": modes["high_quality"],
        "far": (samples.norm(dim=1) > FAR).float().mean().item(),
    }


def run(
    run_dir: str | Path,
    seeds: int = 1,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
    n: int = 2000,
) -> dict[str, Any]:
    """Train the preset once (``steps`` overrides its length), then sample it every way; ``full``: more NFE values
    (250, 500) and 10,000 samples."""
    run_dir = Path(run_dir)
    n = 10000 if full else n
    nfes = FULL_NFES if full else NFES
    overrides = ["train.sample_every=null", *placement.overrides(), *([f"train.steps={steps}"] if steps else [])]
    train(load_config(PRESET, overrides), run_dir / PRESET, progress=progress)
    fitted = load_run(run_dir / PRESET)
    model, dataset = fitted.model, fitted.dataset
    real = test_batch(fitted, n)
    control = fid(real, dataset.sample(n, torch.Generator().manual_seed(12345)).x)
    trained, exact = {}, {}
    for sampler, values in nfes.items():
        for nfe in values:
            generator = torch.Generator().manual_seed(0)
            samples = model.sample(n, generator=generator, sampler=sampler, steps=nfe)
            trained[f"{sampler}@{nfe}"] = {"sampler": sampler, "nfe": nfe, **score(samples, real, dataset)}
            exact_draw = exact_samples(model, dataset, sampler, nfe, n, seed=0)
            exact[f"{sampler}@{nfe}"] = {"sampler": sampler, "nfe": nfe, **score(exact_draw, real, dataset)}
    results: dict[str, Any] = {
        "preset": PRESET,
        "samples": n,
        "control_fid_data_vs_data": control,
        "trained": trained,
        "exact": exact,
        "claim": CLAIM,
        "rule": RULE,
        **decide(trained),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(results, run_dir / "figure.png")
    return results


def decide(trained: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The verdict of ``RULE`` from the trained model's FIDs."""
    reference = trained[f"{REFERENCE[0]}@{REFERENCE[1]}"]["fid"]
    few = {key: entry for key, entry in trained.items() if entry["nfe"] <= FEW}
    best = min(few, key=lambda key: few[key]["fid"])
    best_fid = few[best]["fid"]
    if best_fid <= WITHIN * reference + SLACK:
        verdict = "holds"
    elif best_fid > BEYOND * reference + SLACK:
        verdict = "fails"
    else:
        verdict = "undecided at this budget"
    return {"reference_fid": reference, "best_few_step": best, "best_few_step_fid": best_fid, "verdict": verdict}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| sampler | NFE | FID (trained) | near a mode | off the ring | FID (exact denoiser) | near a mode (exact) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, entry in results["trained"].items():
        exact = results["exact"][key]
        lines.append(
            f"| {entry['sampler']} | {entry['nfe']} | {entry['fid']:.4f} | {entry['high_quality']:.1%} | "
            f"{entry['far']:.2%} | {exact['fid']:.4f} | {exact['high_quality']:.1%} |"
        )
    lines += [
        "",
        f"{results['samples']} samples each (seed 0) against as many held-out points; FID on the raw coordinates. "
        f"Control: FID between two independent draws of the data = {results['control_fid_data_vs_data']:.4f}. "
        f"'off the ring': farther than {FAR} from the origin.",
        f"Claim: {results['claim']}. Rule (fixed before running): {results['rule']}.",
        f"Reference FID(ddpm, 1000) = {results['reference_fid']:.4f}; best at <= {FEW} NFE: "
        f"{results['best_few_step']} with {results['best_few_step_fid']:.4f}. Verdict: **{results['verdict']}**.",
    ]
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], path: Path) -> None:
    """FID vs NFE per sampler: the trained model (left) and the exact denoiser (right), log-log."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, study, title in zip(axes, ("trained", "exact"), ("trained model", "exact denoiser"), strict=True):
        for i, sampler in enumerate(NFES):
            points = sorted((e["nfe"], e["fid"]) for e in results[study].values() if e["sampler"] == sampler)
            ax.plot(*zip(*points, strict=True), "o-", color=f"C{i}", label=sampler)
        ax.axhline(results["control_fid_data_vs_data"], color="k", ls=":", lw=1, label="data vs data")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_title(title)
    axes[0].set_ylabel("FID (raw coordinates)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
