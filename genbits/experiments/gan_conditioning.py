"""Where class labels enter a conditional GAN (the talk, after BigGAN: insert conditioning all through the network,
not only concatenated with the input): ``concat`` (one-hot appended to z, label maps appended to the critic's input)
against ``throughout`` (class-conditional batch norm in every generator layer, projection critic), same DCGAN.

Scores: FID/KID of samples with uniform labels; intra-class FID, the FID between samples generated with label c
and the test images of class c, averaged over classes (a model that ignores its label scores well on FID but badly
here); and the share of samples generated with label c that the shipped classifier assigns to c.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from genbits.data import build_dataset  # noqa: E402
from genbits.experiments.gan_images import (  # noqa: E402
    SEPARATED,
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
from genbits.metrics.extractors import (  # noqa: E402
    Extractor,
    FeatureNet,
    extractor,
    load_feature_net,
    resize_grey,
    shipped,
)
from genbits.metrics.feature_training import accuracy  # noqa: E402
from genbits.metrics.fid import fid  # noqa: E402
from genbits.runs import Run, load_run  # noqa: E402
from genbits.runs.evaluate import DEFAULT_FEATURES  # noqa: E402
from genbits.runs.plots import image_grid  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
VARIANTS = ("concat", "throughout")
PER_CLASS = 500  # generated per class for intra-class FID and accuracy (vs the 1,000 test images per class)
SHOWN = 8  # samples per class in the figure
KEYS = ("fid", "kid", "intra_fid", "accuracy")  # summarised over seeds
CPU_STEPS = 1000  # at the shared 300 the two variants were within seed noise; at 1000 they separate (~5 min)
CLAIM = "conditioning throughout the network (cBN in G + projection critic) beats concatenating labels at the inputs"
CONTROL = "concat: one-hot labels appended to z and label maps to the critic's input, same net, steps and seeds"
RULE = f"intra-class FID (the conditional quality) per seed, throughout against concat: {SEPARATED}"


def intra_class_fid(real: Tensor, real_labels: Tensor, fake: Tensor, fake_labels: Tensor) -> list[float]:
    """FID per class between real and generated features of that class, in class order (average it for the
    intra-class FID): conditional quality that the unconditional FID cannot see."""
    return [fid(real[real_labels == c], fake[fake_labels == c]) for c in real_labels.unique().tolist()]


def sample_accuracy(classifier: FeatureNet, images: Tensor, labels: Tensor) -> float:
    """Share of images that the classifier assigns to their label (images resized to the classifier's input)."""
    return accuracy(classifier, resize_grey(images, classifier.size), labels)


@torch.no_grad()
def class_samples(model: nn.Module, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """``per_class`` samples generated with each label in turn, in [0, 1], and those labels."""
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat([model.sample(len(chunk), chunk, generator) for chunk in labels.split(1000)])
    return images.clamp(0, 1), labels


@dataclass
class Reference:
    """The test split's features and labels, the nets that judge samples, and the classifier's accuracy on the real
    test images at the run's resolution (the ceiling for samples): computed once per experiment."""

    features: Extractor
    classifier: FeatureNet
    real: Tensor
    labels: Tensor
    real_accuracy: float

    @classmethod
    def of(cls, run: Run) -> Reference:
        name = run.config.data.name
        test = build_dataset(name, run.config.data.options, split="test")
        features = extractor(DEFAULT_FEATURES[name])
        classifier, _ = load_feature_net(shipped()[DEFAULT_FEATURES[name]])
        return cls(features, classifier, features(test.x), test.y, sample_accuracy(classifier, test.x, test.y))


def measure(run: Run, reference: Reference, n: int, seed: int) -> dict[str, Any]:
    """FID/KID (uniform labels), intra-class FID and classifier accuracy (per class and averaged) of one run."""
    images, labels = class_samples(run.model, PER_CLASS, seed)
    per_class_fid = intra_class_fid(reference.real, reference.labels, reference.features(images), labels)
    classes = labels.unique().tolist()
    per_class_accuracy = [
        sample_accuracy(reference.classifier, images[labels == c], labels[labels == c]) for c in classes
    ]
    return scores(run, n) | {
        "intra_fid": statistics.mean(per_class_fid),
        "intra_fid_per_class": per_class_fid,
        "accuracy": statistics.mean(per_class_accuracy),
        "accuracy_per_class": per_class_accuracy,
    }


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train both variants over seeds and measure them; writes conditioning.png, table.md and results.json."""
    run_dir = Path(run_dir)
    chosen = size(full, steps, cpu_steps=CPU_STEPS)
    rows = by_point(
        sweep(run_dir, {"model.conditioning": VARIANTS}, seeds, chosen.overrides_with_steps(), progress, placement)
    )
    runs = {
        variant: [load_run(row["path"]) for row in seeds_rows]
        for variant, seeds_rows in zip(VARIANTS, rows, strict=True)
    }
    reference = Reference.of(runs[VARIANTS[0]][0])
    measured = {
        v: [measure(r, reference, chosen.eval_samples, seed) for seed, r in enumerate(rs)] for v, rs in runs.items()
    }
    results = {
        "settings": {"variants": VARIANTS, "seeds": seeds, "steps": chosen.steps, "per_class": PER_CLASS},
        "real_test_accuracy": reference.real_accuracy,
        "runs": measured,
        "summary": {v: {k: spread([m[k] for m in ms]) for k in KEYS} for v, ms in measured.items()},
    }
    intra = {v: [m["intra_fid"] for m in ms] for v, ms in measured.items()}
    verdict = separated(intra["throughout"], intra["concat"])
    results |= {"claim": CLAIM, "control": CONTROL, "rule": RULE, "verdict": verdict}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure({v: rs[0] for v, rs in runs.items()}, measured, run_dir / "conditioning.png")
    return results


def table(results: dict[str, Any]) -> str:
    measured, ceiling = results["runs"], results["real_test_accuracy"]
    body = [
        [
            variant,
            spread_cell([m["fid"] for m in ms]),
            spread_cell([m["kid"] for m in ms], 2),
            spread_cell([m["intra_fid"] for m in ms]),
            spread_cell([m["accuracy"] for m in ms], 3),
        ]
        for variant, ms in measured.items()
    ]
    return "\n".join(
        [
            "# Conditioning: input concatenation vs throughout (cBN + projection critic)",
            "",
            f"{results['settings']['steps']} steps, {results['settings']['seeds']} seeds. "
            "FID/KID: samples with uniform labels. Intra-class FID: per class, samples generated with label c vs the "
            f"test images of class c ({PER_CLASS} generated per class), averaged. Accuracy: share of samples the "
            f"shipped classifier assigns to the label they were generated with; on the real test images at this "
            f"resolution it is {ceiling:.3f}. FIDs on genbits' classifier features (not Inception); "
            "median [min, max] over seeds.",
            "",
            *markdown_table(["conditioning", "FID", "KID", "intra-class FID", "accuracy"], body),
            "",
            *verdict_lines(results),
        ]
    )


def figure(first_runs: dict[str, Run], measured: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Seed 0's samples per variant (one row per class), and the classifier's accuracy per class (median)."""
    fig, axes = plt.subplots(1, len(first_runs) + 1, figsize=(4.5 * (len(first_runs) + 1), 5))
    for ax, (variant, fitted) in zip(axes, first_runs.items(), strict=False):
        images, _ = class_samples(fitted.model, SHOWN, seed=0)
        ax.imshow(image_grid(images, columns=SHOWN), cmap="gray", vmin=0, vmax=1)
        m = measured[variant][0]
        ax.set_title(f"{variant}, seed 0: one row per label\nFID {m['fid']:.1f}, intra-class FID {m['intra_fid']:.1f}")
        ax.set_axis_off()
    bars = axes[-1]
    width = 0.8 / len(measured)
    for i, (variant, ms) in enumerate(measured.items()):
        per_class = [statistics.median(values) for values in zip(*(m["accuracy_per_class"] for m in ms), strict=True)]
        bars.bar([c + i * width for c in range(len(per_class))], per_class, width, label=variant)
    bars.set_xlabel("label asked for")
    bars.set_ylabel("share classified as that label (median over seeds)")
    bars.set_ylim(0, 1.05)
    bars.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
