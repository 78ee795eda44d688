"""Classifier-free guidance beyond diffusion: one class-conditional gated PixelCNN (trained with the label dropped for
a null class 10% of the time) sampled at guidance scales w, log p̃(k) = (1 + w)·log p(k | x_<, y) − w·log p(k | x_<)
per pixel (Ho & Salimans 2022's rule on each conditional's logits). The talk's claim for diffusion, tested on an
autoregressive model: guidance trades diversity for fidelity.

Scores per scale, on ``PER_CLASS`` samples of each class: the shipped classifier's accuracy on the labels the samples
were drawn with (fidelity to the class), improved precision (fidelity to the data) and recall (diversity) against the
test split on the same classifier's features, and FID. w = 0 is plain conditional sampling, the control; the real
test images' accuracy is the ceiling. CPU default: ``pixelcnn-digits`` (8×8, 64 network passes per image, minutes on
a CPU; its test split holds 297 images, so FID and recall are coarse); ``--full``: ``pixelcnn-fmnist`` (28×28, a GPU).
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
from torch import Tensor, nn  # noqa: E402

from genbits.config import load_config  # noqa: E402
from genbits.experiments.gan_conditioning import Reference, sample_accuracy  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.metrics.fid import fid, precision_recall  # noqa: E402
from genbits.runs import load_run  # noqa: E402
from genbits.runs.plots import image_grid  # noqa: E402
from genbits.train import train  # noqa: E402

PRESET, FULL_PRESET = "pixelcnn-digits", "pixelcnn-fmnist"
CPU: tuple[str, ...] = ()  # the preset as it is
SCALES = (0.0, 1.0, 3.0)
PER_CLASS = 50  # samples per class and scale: each image is 196 network passes (392 with guidance) on a CPU
FULL_PER_CLASS = 500
SHOWN = 3  # samples per class and scale in samples.png
KEYS = ("accuracy", "fid", "precision", "recall")
ACCURACY_GAIN = 0.05  # holds: accuracy at the largest scale at least this above w = 0 (median over seeds) ...
RECALL_LOSS = 0.02  # ... and recall at least this below it
CLAIM = (
    "classifier-free guidance of an autoregressive model trades diversity for fidelity: raising the scale w raises "
    "the classifier's accuracy on the sampled class and lowers recall"
)
RULE = (
    f"median over seeds, largest w against w = 0: holds if accuracy rises by at least {ACCURACY_GAIN} and recall "
    f"falls by at least {RECALL_LOSS}; fails if accuracy does not rise at all or recall rises; otherwise undecided "
    "at this budget"
)


@torch.no_grad()
def guided_samples(model: nn.Module, per_class: int, w: float, seed: int) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of each class drawn at guidance scale w (the same generator seed for every w)."""
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([model.sample(len(c), c, generator, guidance=w) for c in labels.split(1000)]), labels


def measure(model: nn.Module, reference: Reference, per_class: int, w: float, seed: int) -> dict[str, Any]:
    images, labels = guided_samples(model, per_class, w, seed)
    fake = reference.features(images)
    precision, recall = precision_recall(reference.real, fake)
    return {
        "w": w,
        "accuracy": sample_accuracy(reference.classifier, images, labels),
        "fid": fid(reference.real, fake),
        "precision": precision,
        "recall": recall,
    }


def run(
    run_dir: str | Path,
    seeds: int = 1,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train the conditional PixelCNN per seed, sample it at every scale, score; writes results.json, table.md,
    guidance.png (the curves) and samples.png (one row per class at each scale, seed 0)."""
    run_dir = Path(run_dir)
    per_class = FULL_PER_CLASS if full else PER_CLASS
    measured: list[list[dict[str, Any]]] = []
    shown: dict[float, Tensor] = {}
    reference = None
    for seed in range(seeds):
        overrides = [f"train.seed={seed}", "train.sample_every=null", *placement.overrides()]
        overrides += [] if full else list(CPU)
        overrides += [f"train.steps={steps}"] if steps else []
        preset = FULL_PRESET if full else PRESET
        path = run_dir / f"{preset}-seed{seed}"
        train(load_config(preset, overrides), path, progress=progress)
        fitted = load_run(path)
        reference = reference or Reference.of(fitted)
        measured.append([measure(fitted.model, reference, per_class, w, seed) for w in SCALES])
        if seed == 0:
            shown = {w: guided_samples(fitted.model, SHOWN, w, seed)[0] for w in SCALES}
    results: dict[str, Any] = {
        "claim": CLAIM,
        "rule": RULE,
        "settings": {
            "preset": FULL_PRESET if full else PRESET,
            "full": full,
            "seeds": seeds,
            "scales": SCALES,
            "per_class": per_class,
        },
        "real_test_accuracy": reference.real_accuracy,
        "runs": measured,
        "median": {key: [median(measured, i, key) for i in range(len(SCALES))] for key in KEYS},
    }
    results |= decide(results["median"])
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(results, shown, run_dir)
    return results


def median(measured: list[list[dict[str, Any]]], scale: int, key: str) -> float:
    return statistics.median(seed[scale][key] for seed in measured)


def decide(medians: dict[str, list[float]]) -> dict[str, Any]:
    """The verdict of ``RULE`` from the medians over seeds at each scale."""
    gain = medians["accuracy"][-1] - medians["accuracy"][0]
    loss = medians["recall"][0] - medians["recall"][-1]
    if gain >= ACCURACY_GAIN and loss >= RECALL_LOSS:
        verdict = "holds"
    elif gain <= 0 or loss < 0:
        verdict = "fails"
    else:
        verdict = "undecided at this budget"
    return {"accuracy_gain": gain, "recall_loss": loss, "verdict": verdict}


def table(results: dict[str, Any]) -> str:
    lines = ["| guidance w | accuracy | precision | recall | FID |", "|---:|---:|---:|---:|---:|"]
    m = results["median"]
    for i, w in enumerate(results["settings"]["scales"]):
        lines.append(
            f"| {w:g} | {m['accuracy'][i]:.3f} | {m['precision'][i]:.3f} | {m['recall'][i]:.3f} | {m['fid'][i]:.1f} |"
        )
    lines += [
        "",
        f"Medians over {results['settings']['seeds']} seed(s), {results['settings']['per_class']} samples per class; "
        f"the classifier's accuracy on real test images: {results['real_test_accuracy']:.3f}.",
        f"Claim: {results['claim']}. Rule (fixed before running): {results['rule']}.",
        f"Accuracy gain {results['accuracy_gain']:+.3f}, recall loss {results['recall_loss']:+.3f}. "
        f"Verdict: **{results['verdict']}**.",
    ]
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], shown: dict[float, Tensor], run_dir: Path) -> None:
    """guidance.png: accuracy, precision and recall against w (medians); samples.png: a row per class at each w."""
    scales, m = results["settings"]["scales"], results["median"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("accuracy", "precision", "recall"):
        ax.plot(scales, m[key], marker="o", label=key)
    ax.axhline(results["real_test_accuracy"], color="k", ls="--", lw=1, label="accuracy on real images")
    ax.set_xlabel("guidance scale w")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("class-conditional PixelCNN: fidelity vs diversity", fontsize=9)
    fig.tight_layout()
    fig.savefig(run_dir / "guidance.png", dpi=90)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(shown), figsize=(1.6 * len(shown), 4.6))
    for ax, (w, images) in zip(axes, shown.items(), strict=True):
        ax.imshow(image_grid(images, columns=SHOWN), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"w = {w:g}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(run_dir / "samples.png", dpi=90)
    plt.close(fig)
