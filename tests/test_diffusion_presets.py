"""The image diffusion presets: each builds and takes a training step's loss; the CPU default of the class-conditional
Fashion-MNIST model, guided, makes samples that genbits' shipped classifier recognises (slow)."""

from __future__ import annotations

import pytest
import torch

from genbits import load_config
from genbits.data import build_dataset
from genbits.data.base import Batch
from genbits.experiments.gan_conditioning import sample_accuracy
from genbits.metrics.extractors import load_feature_net, shipped
from genbits.models.base import balanced_labels
from genbits.registry import MODELS, OBJECTIVES
from genbits.runs import load_run
from genbits.train import train

PRESETS = ["diffusion-digits", "diffusion-fmnist14", "diffusion-fmnist", "classifier-fmnist14"]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_and_gives_a_finite_loss(name):
    """The model and objective of each preset, on a batch shaped like its data (loading Fashion-MNIST is slow)."""
    config = load_config(name)
    size = config.data.options.get("size") or {"digits": 8, "fashion-mnist": 28}[config.data.name]
    model = MODELS.build(config.model.name, config.model.options, event_shape=(1, size, size), num_classes=10)
    objective = OBJECTIVES.build(config.objective.name, config.objective.options)
    batch = Batch(torch.rand(4, 1, size, size), torch.arange(4))
    assert torch.isfinite(objective(model, batch).per_player["model"])


@pytest.mark.slow
def test_guided_fmnist14_samples_are_recognised_as_often_as_real_images(tmp_path):
    """The issue's bar: with classifier-free guidance the shipped fmnist classifier labels the samples as their
    class at least as often as it labels real 14×14 test images (its ceiling at 14×14, ~0.70)."""
    train(load_config("diffusion-fmnist14"), tmp_path, progress=False)
    model = load_run(tmp_path).model
    classifier, _ = load_feature_net(shipped()["fmnist"])
    test = build_dataset("fashion-mnist", {"size": 14}, split="test")
    real = sample_accuracy(classifier, test.x, test.y)
    labels = balanced_labels(500, 10)
    how = {"sampler": "ddim", "steps": 50, "spacing": "leading", "guidance": 2.0}
    samples = model.sample(500, labels, torch.Generator().manual_seed(0), **how)
    guided = sample_accuracy(classifier, samples.clamp(0, 1), labels)
    assert guided >= real, f"guided samples recognised {guided:.3f} of the time, real test images {real:.3f}"
