"""Classifier-free guidance trades diversity for fidelity (Ho & Salimans 2021, "Classifier-free diffusion
guidance"): ε̃ = (1 + w) ε(x, c) − w ε(x, ∅) pushes samples towards what makes their class recognisable, at the price
of variety. One class-conditional diffusion model (preset diffusion-fmnist14, trained once with p_uncond = 0.1) is
sampled with DDIM at a grid of guidance scales w, the same noise and labels at every scale; each scale is scored on
genbits' shipped Fashion-MNIST classifier: its accuracy on the samples (fidelity to the asked class; its accuracy on
real test images at this resolution is the ceiling), precision and recall (Kynkäänniemi et al. 2019: recall is the
diversity half), FID and intra-class FID against the test split.

Sampling: DDIM with its own "leading" spacing (the last time sampled is ⌊T/K⌋·(K−1) + 1, not T). The cosine
schedule's ᾱ_T ≈ 2.4e-9 makes a first step from t = T divide the ε-prediction's error by √ᾱ_T ≈ 5e-5: with the
"trailing" spacing the CPU model's samples blew up to |x| ~ 10³.

Controls: w = 0 (the conditional model unguided) and the real test images (the classifier's ceiling). One trained
model: the claim is about sampling, so training seeds are not the variable; the sampling noise is fixed across w.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from genbits.config import load_config  # noqa: E402
from genbits.experiments.gan_conditioning import Reference, intra_class_fid, sample_accuracy  # noqa: E402
from genbits.experiments.gan_images import markdown_table  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.metrics.fid import fid, precision_recall  # noqa: E402
from genbits.runs import Run, load_run  # noqa: E402
from genbits.runs.plots import image_grid  # noqa: E402
from genbits.train import train  # noqa: E402

PRESET, FULL_PRESET = "diffusion-fmnist14", "diffusion-fmnist"
SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)
SAMPLING = {"sampler": "ddim", "steps": 25, "spacing": "leading"}  # DDIM's own spacing: see above
PER_CLASS, FULL_PER_CLASS = 30, 500  # the CPU default is sized for minutes on 2 cores
SHOWN = 6  # samples per class in the grid of each scale
RISE = 0.05  # fidelity rises: accuracy at the largest w at least this above w = 0
DROP = 0.05  # diversity falls: recall at the largest w at least this below w = 0
CLAIM = (
    "classifier-free guidance trades diversity for fidelity: as the guidance scale w grows, the classifier "
    "recognises more samples as their class while recall falls"
)
RULE = (
    f"holds if, from w = 0 to the largest w, the shipped classifier's accuracy on the samples rises by at least {RISE} "
    f"and recall falls by at least {DROP}; fails if accuracy does not rise or recall does not fall; otherwise "
    "undecided at this budget"
)


def run(
    run_dir: str | Path,
    seeds: int = 1,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train the model once (``seeds`` ignored: one model, sampled many ways), sweep w; writes guidance.png,
    samples.png, table.md and results.json. ``full``: the 28×28 preset and 500 samples per class."""
    run_dir = Path(run_dir)
    preset, per_class = (FULL_PRESET, FULL_PER_CLASS) if full else (PRESET, PER_CLASS)
    overrides = ["train.sample_every=null", *placement.overrides(), *([f"train.steps={steps}"] if steps else [])]
    model_dir = run_dir / "model"
    train(load_config(preset, overrides), model_dir, progress=progress)
    return study(load_run(model_dir), run_dir, per_class)


def study(fitted: Run, run_dir: Path, per_class: int) -> dict[str, Any]:
    """The guidance sweep on a trained class-conditional diffusion run; writes the results into ``run_dir``."""
    reference = Reference.of(fitted)
    measured = {w: measure(fitted, reference, w, per_class) for w in SCALES}
    results = {
        "settings": {"run": str(fitted.path), "scales": SCALES, "sampling": SAMPLING, "per_class": per_class},
        "real_test_accuracy": reference.real_accuracy,
        "scales": {str(w): m for w, m in measured.items()},
        "claim": CLAIM,
        "rule": RULE,
        **decide(measured),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(results, run_dir / "guidance.png")
    sample_grids(fitted, run_dir / "samples.png")
    return results


def guided_samples(run: Run, w: float, per_class: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of each class at guidance w, in [0, 1]; the same noise and labels for every w."""
    labels = torch.arange(run.model.num_classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat(
        [run.model.sample(len(c), c, generator, guidance=w, **SAMPLING) for c in labels.split(500)]
    ).clamp(0, 1)
    return images, labels


@torch.no_grad()
def measure(run: Run, reference: Reference, w: float, per_class: int) -> dict[str, float]:
    images, labels = guided_samples(run, w, per_class)
    fake = reference.features(images)
    precision, recall = precision_recall(reference.real, fake)
    return {
        "accuracy": sample_accuracy(reference.classifier, images, labels),
        "precision": precision,
        "recall": recall,
        "fid": fid(reference.real, fake),
        "intra_fid": statistics.mean(intra_class_fid(reference.real, reference.labels, fake, labels)),
    }


def decide(measured: dict[float, dict[str, float]]) -> dict[str, Any]:
    """The verdict of ``RULE`` from the scores at each scale (w = 0 first, the largest last)."""
    first, last = measured[min(measured)], measured[max(measured)]
    rise, drop = last["accuracy"] - first["accuracy"], first["recall"] - last["recall"]
    if rise >= RISE and drop >= DROP:
        verdict = "holds"
    elif rise <= 0 or drop <= 0:
        verdict = "fails"
    else:
        verdict = "undecided at this budget"
    return {"accuracy_rise": rise, "recall_drop": drop, "verdict": verdict}


def table(results: dict[str, Any]) -> str:
    rows = [
        [
            w,
            f"{m['accuracy']:.3f}",
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['fid']:.1f}",
            f"{m['intra_fid']:.1f}",
        ]
        for w, m in results["scales"].items()
    ]
    s = results["settings"]
    return "\n".join(
        [
            "# Classifier-free guidance: fidelity vs diversity",
            "",
            f"Model: the run in {s['run']}. {s['per_class']} samples per class at each scale w "
            f"({s['sampling']['sampler']}, "
            f"{s['sampling']['steps']} steps, the same noise at every w). Accuracy: share that genbits' shipped "
            f"classifier assigns to the asked class (real test images: {results['real_test_accuracy']:.3f}). "
            "Precision, recall, FID and intra-class FID on that classifier's features against the test split.",
            "",
            *markdown_table(["w", "accuracy", "precision", "recall", "FID", "intra-class FID"], rows),
            "",
            f"Claim: {results['claim']}. Rule (fixed before running): {results['rule']}.",
            f"Accuracy rise {results['accuracy_rise']:+.3f}, recall drop {results['recall_drop']:+.3f}. "
            f"Verdict: **{results['verdict']}**.",
            "",
        ]
    )


def figure(results: dict[str, Any], path: Path) -> None:
    """Left: fidelity (accuracy, precision) and diversity (recall) against w. Right: FID and intra-class FID."""
    scales = [float(w) for w in results["scales"]]
    scores = list(results["scales"].values())
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("accuracy", "o-"), ("precision", "s-"), ("recall", "^-")):
        left.plot(scales, [m[key] for m in scores], style, label=key)
    left.axhline(results["real_test_accuracy"], color="k", ls="--", lw=1, label="accuracy on real test images")
    left.set_xlabel("guidance scale w")
    left.set_ylim(0, 1.05)
    left.legend(fontsize=8)
    left.set_title("fidelity vs diversity")
    for key, style in (("fid", "o-"), ("intra_fid", "s-")):
        right.plot(scales, [m[key] for m in scores], style, label=key.replace("_", "-"))
    right.set_xlabel("guidance scale w")
    right.set_ylabel("Fréchet distance (classifier features)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sample_grids(run: Run, path: Path) -> None:
    """One panel per scale: a row per class, the same noise in every panel."""
    fig, axes = plt.subplots(1, len(SCALES), figsize=(2.6 * len(SCALES), 4.8))
    for ax, w in zip(axes, SCALES, strict=True):
        images, _ = guided_samples(run, w, SHOWN)
        ax.imshow(image_grid(images, columns=SHOWN), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"w = {w:g}")
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
