"""Guidance trades diversity for fidelity, whichever way it is done: classifier-free guidance (Ho & Salimans 2021,
"Classifier-free diffusion guidance": ε̃ = (1 + w) ε(x, c) − w ε(x, ∅)) and classifier guidance (Dhariwal & Nichol
2021, "Diffusion models beat GANs on image synthesis": ε̃ = ε(x, c) − s √(1 − ᾱ) ∇ log p(c | x_t) with a classifier
trained on noisy images) both push samples towards what makes their class recognisable, at the price of variety.

One class-conditional diffusion model (preset diffusion-fmnist14, p_uncond = 0.1) and one noise-conditional
classifier on the same schedule (preset classifier-fmnist14), each trained once through the loop (or reused from the
experiment's run directory: a finished run is resumed at its last step, so nothing is retrained). The model is
sampled with DDIM at a grid of scales of each kind, with the same noise and labels at every scale; each scale is
scored on genbits' shipped Fashion-MNIST classifier (not the guiding one): its accuracy on the samples (fidelity to
the asked class; its accuracy on real test images at this resolution is the ceiling the issue sets as the bar),
precision and recall (Kynkäänniemi et al. 2019: recall is the diversity half), FID and intra-class FID against the
test split.

Sampling: DDIM, 25 steps, the default trailing spacing (first step at t = T); the samplers clip the denoised x̂₀ to
[−1, 1] (``genbits/sampling/clipping.py``), without which the cosine schedule's ᾱ_T ≈ 2.4e-9 blew this model's
samples up to |x| ~ 10³ from t = T.

Controls: scale 0 (the conditional model unguided; w = 0 and s = 0 are the same samples, measured once) and the
real test images (the classifier's ceiling). One trained model: the claim is about sampling, so training seeds are
not the variable; the sampling noise is fixed across scales and kinds.
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
CLASSIFIER_PRESET = "classifier-fmnist14"
CLASSIFIER_STEPS = 800  # its loss (noisy batches, all t) plateaus at ~1.1-1.3 from step ~250; 1500 adds CPU minutes
FULL_CLASSIFIER = [
    "data.size=0",
    "model.schedule=linear",
    "model.attention=[7]",
    "model.channels=32",
    "train.steps=5000",
]
"""The classifier for ``--full``: classifier-fmnist14 moved to diffusion-fmnist's 28×28 images and linear schedule."""
ARMS = {"classifier-free": (0.0, 0.5, 1.0, 2.0, 4.0), "classifier": (0.0, 1.0, 3.0, 10.0)}
"""Guidance scales per kind: classifier-free w, classifier s. Scale 0 is the unguided conditional model in both."""
SAMPLING = {"sampler": "ddim", "steps": 25}  # trailing spacing; x̂₀ clipped (see above)
PER_CLASS, FULL_PER_CLASS = 30, 500  # the CPU default is sized for minutes on 2 cores
SHOWN = 6  # samples per class in the grid of each scale
RISE = 0.05  # fidelity rises: accuracy at the largest scale at least this above scale 0
DROP = 0.05  # diversity falls: recall at the largest scale at least this below scale 0
CLAIM = (
    "guidance trades diversity for fidelity, classifier-free and classifier guidance alike: as the guidance scale "
    "grows, the classifier recognises more samples as their class while recall falls"
)
RULE = (
    f"for each kind of guidance: holds if, from scale 0 to its largest scale, the shipped classifier's accuracy on the "
    f"samples rises by at least {RISE} and recall falls by at least {DROP}; fails if accuracy does not rise or recall "
    "does not fall; otherwise undecided at this budget. The claim holds if it holds for both kinds, fails if it fails "
    "for either, and is otherwise undecided"
)
Scores = dict[str, float]


def run(
    run_dir: str | Path,
    seeds: int = 1,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train the model and the guiding classifier once (``seeds`` ignored: one model, sampled many ways; ``steps``
    trains both for that many steps), sweep both kinds of guidance; writes guidance.png, samples.png, table.md
    and results.json. ``full``: the 28×28 preset, its classifier and 500 samples per class."""
    run_dir = Path(run_dir)
    preset, per_class = (FULL_PRESET, FULL_PER_CLASS) if full else (PRESET, PER_CLASS)
    common = ["train.sample_every=null", *placement.overrides()]
    budget = [f"train.steps={steps}"] if steps else []
    train(load_config(preset, [*common, *budget]), run_dir / "model", progress=progress)
    guide = [*(FULL_CLASSIFIER if full else [f"train.steps={CLASSIFIER_STEPS}"]), *common, *budget]
    train(load_config(CLASSIFIER_PRESET, guide), run_dir / "classifier", progress=progress)
    return study(load_run(run_dir / "model"), run_dir / "classifier", run_dir, per_class)


def study(fitted: Run, classifier: Path, run_dir: Path, per_class: int) -> dict[str, Any]:
    """Both guidance sweeps on a trained class-conditional diffusion run, the classifier guidance by the
    noise-conditional classifier run in ``classifier``; writes the results into ``run_dir``."""
    reference = Reference.of(fitted)
    unguided = measure(fitted, reference, {}, per_class)
    measured: dict[str, dict[float, Scores]] = {}
    grids: dict[str, dict[float, Tensor]] = {}
    for arm, scales in ARMS.items():
        measured[arm], grids[arm] = {0.0: unguided[0]}, {0.0: unguided[1]}
        for scale in scales[1:]:
            how = {"guidance": scale} | ({"classifier": str(classifier)} if arm == "classifier" else {})
            measured[arm][scale], grids[arm][scale] = measure(fitted, reference, how, per_class)
    verdicts = {arm: decide(scores) for arm, scores in measured.items()}
    results = {
        "settings": {
            "run": str(fitted.path),
            "classifier": str(classifier),
            "arms": ARMS,
            "sampling": SAMPLING,
            "per_class": per_class,
        },
        "real_test_accuracy": reference.real_accuracy,
        "arms": {
            arm: {
                "scales": {str(scale): m for scale, m in measured[arm].items()},
                "first_scale_above_real": first_above(measured[arm], reference.real_accuracy),
                **verdicts[arm],
            }
            for arm in ARMS
        },
        "claim": CLAIM,
        "rule": RULE,
        "verdict": overall({arm: v["verdict"] for arm, v in verdicts.items()}),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(results, run_dir / "guidance.png")
    sample_grids(grids, run_dir / "samples.png")
    return results


def guided_samples(run: Run, how: dict[str, Any], per_class: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of each class with guidance ``how``, in [0, 1]; the same noise and labels for every
    scale and kind."""
    labels = torch.arange(run.model.num_classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat([run.model.sample(len(c), c, generator, **how, **SAMPLING) for c in labels.split(500)])
    return images.clamp(0, 1), labels


@torch.no_grad()
def measure(run: Run, reference: Reference, how: dict[str, Any], per_class: int) -> tuple[Scores, Tensor]:
    """The scores of one guidance setting, and the first ``SHOWN`` samples of each class (for the grid)."""
    images, labels = guided_samples(run, how, per_class)
    fake = reference.features(images)
    precision, recall = precision_recall(reference.real, fake)
    scores = {
        "accuracy": sample_accuracy(reference.classifier, images, labels),
        "precision": precision,
        "recall": recall,
        "fid": fid(reference.real, fake),
        "intra_fid": statistics.mean(intra_class_fid(reference.real, reference.labels, fake, labels)),
    }
    shown = images.view(-1, per_class, *images.shape[1:])[:, :SHOWN].flatten(0, 1)
    return scores, shown


def decide(measured: dict[float, Scores]) -> dict[str, Any]:
    """The verdict of ``RULE`` for one kind of guidance from the scores at each scale (0 and the largest)."""
    first, last = measured[min(measured)], measured[max(measured)]
    rise, drop = last["accuracy"] - first["accuracy"], first["recall"] - last["recall"]
    if rise >= RISE and drop >= DROP:
        verdict = "holds"
    elif rise <= 0 or drop <= 0:
        verdict = "fails"
    else:
        verdict = "undecided at this budget"
    return {"accuracy_rise": rise, "recall_drop": drop, "verdict": verdict}


def overall(verdicts: dict[str, str]) -> str:
    """Holds if every kind holds, fails if any fails, otherwise undecided."""
    if all(v == "holds" for v in verdicts.values()):
        return "holds"
    return "fails" if "fails" in verdicts.values() else "undecided at this budget"


def first_above(measured: dict[float, Scores], real_accuracy: float) -> float | None:
    """The smallest scale whose samples the classifier recognises at least as often as real test images (the
    issue's bar), or None."""
    return next((scale for scale in sorted(measured) if measured[scale]["accuracy"] >= real_accuracy), None)


def table(results: dict[str, Any]) -> str:
    rows = [
        [
            arm,
            scale,
            f"{m['accuracy']:.3f}",
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['fid']:.1f}",
            f"{m['intra_fid']:.1f}",
        ]
        for arm, a in results["arms"].items()
        for scale, m in a["scales"].items()
    ]
    s = results["settings"]
    verdicts = [
        f"{arm}: accuracy rise {a['accuracy_rise']:+.3f}, recall drop {a['recall_drop']:+.3f}, first scale at or "
        f"above the real images' accuracy: {a['first_scale_above_real']}; **{a['verdict']}**."
        for arm, a in results["arms"].items()
    ]
    return "\n".join(
        [
            "# Guidance: fidelity vs diversity",
            "",
            f"Model: the run in {s['run']}; classifier guidance by the noise-conditional classifier in "
            f"{s['classifier']}. {s['per_class']} samples per class at each scale ({s['sampling']['sampler']}, "
            f"{s['sampling']['steps']} steps, the same noise at every scale). Accuracy: share that genbits' shipped "
            f"classifier assigns to the asked class (real test images: {results['real_test_accuracy']:.3f}). "
            "Precision, recall, FID and intra-class FID on that classifier's features against the test split.",
            "",
            *markdown_table(["guidance", "scale", "accuracy", "precision", "recall", "FID", "intra-class FID"], rows),
            "",
            f"Claim: {results['claim']}. Rule (fixed before running): {results['rule']}.",
            *verdicts,
            f"Verdict: **{results['verdict']}**.",
            "",
        ]
    )


def figure(results: dict[str, Any], path: Path) -> None:
    """Left: the trade-off curve, accuracy (fidelity) against recall (diversity), one line per kind of guidance, each
    point a scale. Right: FID and intra-class FID against the scale."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for (arm, a), color in zip(results["arms"].items(), ("C0", "C1"), strict=False):
        scales = [float(scale) for scale in a["scales"]]
        scores = list(a["scales"].values())
        left.plot([m["recall"] for m in scores], [m["accuracy"] for m in scores], "o-", color=color, label=arm)
        for scale, m in zip(scales, scores, strict=True):
            left.annotate(
                f"{scale:g}", (m["recall"], m["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        right.plot(scales, [m["fid"] for m in scores], "o-", color=color, label=f"{arm}: FID")
        right.plot(scales, [m["intra_fid"] for m in scores], "s--", color=color, label=f"{arm}: intra-class FID")
    left.axhline(results["real_test_accuracy"], color="k", ls="--", lw=1, label="accuracy on real test images")
    left.set_xlabel("recall (diversity)")
    left.set_ylabel("classifier accuracy on samples (fidelity)")
    left.legend(fontsize=8)
    left.set_title("fidelity vs diversity (labels: scale)")
    right.set_xlabel("guidance scale (w or s)")
    right.set_ylabel("Fréchet distance (classifier features)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sample_grids(grids: dict[str, dict[float, Tensor]], path: Path) -> None:
    """One panel per kind and scale: a row per class, the same noise in every panel."""
    panels = [(arm, scale, images) for arm, by_scale in grids.items() for scale, images in by_scale.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 4.4))
    for ax, (arm, scale, images) in zip(axes, panels, strict=True):
        ax.imshow(image_grid(images, columns=SHOWN), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{'w' if arm == 'classifier-free' else 's'} = {scale:g}", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
