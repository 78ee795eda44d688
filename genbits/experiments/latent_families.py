"""Exact likelihood vs bounds on the same data and samples seen: a flow, a VAE trained on the ELBO, one trained on
the IWAE bound (Burda et al. 2016) and an NVAE-style hierarchical VAE (Vahdat & Kautz 2020; ``hvae-digits``, every
bit on), on the 8×8 digits (17 grey levels).

A flow reports its (dequantized) NLL; a latent model only bounds it. Each latent model is scored three ways on the
test split: its ELBO (k = 1), its IWAE bound at k = 5 (the bound the IWAE model trains), and the importance-sampled
NLL at K = 500, the closest to its true likelihood genbits estimates. The bound gap, −ELBO minus the IS NLL, is what
reporting a bound as a likelihood would overstate. Bits/dim and FID (genbits' digits features) side by side.
CLAIM and RULE are fixed below; the flow and the hierarchical model are reported beside them, not judged.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genbits.config import load_config  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.runs import load_run  # noqa: E402
from genbits.runs.evaluate import evaluate  # noqa: E402
from genbits.train import train  # noqa: E402

FLOW, VAE, IWAE, HVAE = "flow (exact NLL)", "VAE (ELBO)", "IWAE (k = 5)", "hierarchical VAE (ELBO)"
FAMILIES = {
    FLOW: ("flow-digits", []),
    VAE: ("vae-digits", []),
    IWAE: ("vae-digits", ["objective=iwae", "objective.k=5"]),
    HVAE: ("hvae-digits", []),
}
STEPS, FULL_STEPS, BATCH = 500, 5000, 128  # every family sees steps × batch training images
TEST_N = 297  # the whole digits test split
IMPORTANCE_SAMPLES = 500
GAP = 0.5  # nats: a bound gap this large is not Monte Carlo noise at these sizes
CLAIM = (
    "a VAE's ELBO is looser than its importance-sampled likelihood, and training on the IWAE bound instead gives a "
    "better likelihood at the same samples seen"
)
RULE = (
    f"holds if, in medians over seeds, the ELBO-trained VAE's −ELBO exceeds its IS NLL (K = {IMPORTANCE_SAMPLES}) by "
    f"more than {GAP} nats and the IWAE-trained model's IS NLL is below the VAE's; fails if the gap is below {GAP} "
    "nats or the IWAE model's IS NLL is above the VAE's by more than the stderr over test images; else undecided"
)


def score(path: Path, latent: bool) -> dict[str, float]:
    run = load_run(path)
    result = evaluate(run, TEST_N, ["nll", "fid"], progress=False, importance_samples=IMPORTANCE_SAMPLES)
    scores = {k: result[k] for k in ("test_nll", "test_nll_stderr", "bits_per_dim", "fid")}
    if latent:
        for k in (1, 5):
            bound = evaluate(run, TEST_N, ["iwae"], iwae_k=k)
            scores[f"bound_k{k}"] = bound["iwae_nll"]
    return scores


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    total = steps or (FULL_STEPS if full else STEPS)
    results: dict[str, Any] = {"runs": {}, "steps": total, "batch_size": BATCH}
    for label, (preset, overrides) in FAMILIES.items():
        results["runs"][label] = []
        for seed in range(seeds):
            settings = [*overrides, f"train.steps={total}", f"train.batch_size={BATCH}", f"train.seed={seed}"]
            settings += ["train.sample_every=0", "train.threads=1", *placement.overrides()]
            path = run_dir / f"{preset}-{label.split()[0].lower()}-seed{seed}"
            train(load_config(preset, settings), path, progress=progress)
            results["runs"][label].append(score(path, latent=label != FLOW))
    results["summary"] = {
        label: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for label, runs in results["runs"].items()
    }
    results |= {"claim": CLAIM, "rule": RULE, **decide(results["summary"])}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(results, run_dir / "figure.png")
    return results


def decide(summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    vae, iwae = summary[VAE], summary[IWAE]
    gap = vae["bound_k1"] - vae["test_nll"]
    better = vae["test_nll"] - iwae["test_nll"]
    if gap > GAP and better > 0:
        verdict = "holds"
    elif gap < GAP or better < -vae["test_nll_stderr"]:
        verdict = "fails"
    else:
        verdict = "undecided at this budget"
    return {"vae_bound_gap": gap, "iwae_improvement": better, "verdict": verdict}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| family (median over seeds) | test NLL (nats) | bits/dim | −ELBO | −IWAE₅ | FID |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, s in results["summary"].items():
        elbo = f"{s['bound_k1']:.2f}" if "bound_k1" in s else "–"
        iwae = f"{s['bound_k5']:.2f}" if "bound_k5" in s else "–"
        lines.append(
            f"| {label} | {s['test_nll']:.2f} ± {s['test_nll_stderr']:.2f} | {s['bits_per_dim']:.3f} | {elbo} | "
            f"{iwae} | {s['fid']:.1f} |"
        )
    lines += [
        "",
        f"Every model saw {results['steps']:,} × {results['batch_size']} training images. Flow: the dequantized NLL "
        f"bound; latent models: importance-sampled NLL (K = {IMPORTANCE_SAMPLES}) and their bounds at k = 1, 5.",
        "",
        f"Claim: {results['claim']}. Rule (fixed before running): {results['rule']}.",
        f"Bound gap of the VAE: {results['vae_bound_gap']:.2f} nats; IWAE improvement: "
        f"{results['iwae_improvement']:.2f} nats. Verdict: **{results['verdict']}**.",
    ]
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], path: Path) -> None:
    """Per family and seed: the IS (or exact) NLL, and the bounds above it for the latent models."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, runs in enumerate(results["runs"].values()):
        for j, r in enumerate(runs):
            ax.scatter(i, r["test_nll"], color="C0", label="NLL (IS or exact)" if i == j == 0 else None)
            for k, colour in ((1, "C3"), (5, "C1")):
                if f"bound_k{k}" in r:
                    ax.scatter(i + 0.1, r[f"bound_k{k}"], color=colour, marker="_", s=200)
    ax.scatter([], [], color="C3", marker="_", s=200, label="−ELBO")
    ax.scatter([], [], color="C1", marker="_", s=200, label="−IWAE (k = 5)")
    ax.set_xticks(range(len(results["runs"])), list(results["runs"]))
    ax.set_ylabel("nats per image (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
