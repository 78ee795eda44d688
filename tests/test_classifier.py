"""The noise-conditional classifier of classifier guidance: trained by the one loop on images noised by its
schedule, a normalized log p(y | x_t), loadable as a guide by a diffusion model with the same schedule."""

from __future__ import annotations

import pytest
import torch

from genbits import load_config
from genbits.data import build_dataset
from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.models.base import Classifier, Generative
from genbits.models.classifier import NoisyClassifier, noisy_classifier
from genbits.models.diffusion import load_classifier
from genbits.objectives.classification import noisy_classification
from genbits.registry import MODELS
from genbits.runs import load_run
from genbits.train import train

TINY = {"channels": 8, "multipliers": [1, 2], "head_dim": 8, "steps": 100}


def tiny(**options) -> NoisyClassifier:
    torch.manual_seed(0)
    return noisy_classifier((1, 8, 8), 10, **{**TINY, **options})


def test_it_classifies_and_does_not_sample():
    model = tiny()
    assert isinstance(model, Classifier) and not isinstance(model, Generative)
    x, noise = torch.rand(5, 1, 8, 8) * 2 - 1, torch.rand(5)
    logits = model(x, noise)
    assert logits.shape == (5, 10)
    y = torch.tensor([0, 3, 9, 3, 1])
    torch.testing.assert_close(model.log_prob_class(x, noise, y), logits.log_softmax(-1)[torch.arange(5), y])
    assert not torch.allclose(logits, model(x, noise + 0.01)), "the noise level does not reach the logits"


def test_the_objective_noises_real_images_with_the_schedule(monkeypatch):
    """What the classifier sees is x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε at the schedule's noise input for t, data in [−1, 1]."""
    model = tiny()
    seen = {}
    forward = NoisyClassifier.forward

    def spy(self, x_t, noise):
        seen["x_t"], seen["noise"] = x_t, noise
        return forward(self, x_t, noise)

    monkeypatch.setattr(NoisyClassifier, "forward", spy)
    x0 = torch.full((4000, 1, 8, 8), 0.75)  # every pixel 0.75 → 0.5 in model space
    torch.manual_seed(1)
    losses = noisy_classification()(model, Batch(x0, torch.zeros(4000, dtype=torch.long)))
    t = (seen["noise"] * model.schedule.T).round()  # discrete schedules feed t/T
    torch.testing.assert_close(seen["noise"], model.schedule.noise_input(t).float())
    alpha_bar = model.schedule.alpha_bar(t).float()[:, None, None, None]
    eps = (seen["x_t"] - alpha_bar.sqrt() * 0.5) / (1 - alpha_bar).sqrt()
    assert abs(eps.mean()) < 0.01 and abs(eps.std() - 1) < 0.01
    assert t.min() >= 1 and t.max() <= model.schedule.T and t.float().std() > 20, "times cover the schedule"
    assert losses.per_player["model"].ndim == 0 and 0 <= losses.metrics["accuracy"] <= 1


def test_bad_data_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"model \(noisy-classifier\): the dataset has no labels"):
        MODELS.build("noisy-classifier", {}, event_shape=(1, 8, 8), num_classes=None, dataset=None)
    with pytest.raises(ConfigError, match="classifies images"):
        MODELS.build("noisy-classifier", {}, event_shape=(2,), num_classes=3, dataset=None)


def test_trained_by_the_loop_it_beats_chance_and_guides_a_matching_diffusion_model(tmp_path):
    """A few dozen steps on the digits: far above chance on lightly noised test images; loaded as a guide."""
    config = load_config(
        {
            "data": "digits",
            "model": {"name": "noisy-classifier", **TINY},
            "objective": "noisy-classification",
            "optim": {"lr": 3e-3},
            "train": {"steps": 60, "batch_size": 64, "sample_every": 0, "ema_decay": 0.0, "threads": 1},
        }
    )
    train(config, tmp_path, progress=False)
    assert not (tmp_path / "samples").exists() or not any((tmp_path / "samples").iterdir()), "a classifier drew"
    model = load_run(tmp_path).model.eval()
    test = build_dataset("digits", {}, split="test")
    t = torch.full((len(test.x),), 5)
    with torch.no_grad():
        alpha_bar = model.schedule.alpha_bar(t).float()[:, None, None, None]
        x_t = alpha_bar.sqrt() * model.to_model(test.x) + (1 - alpha_bar).sqrt() * torch.randn_like(test.x)
        accuracy = (model(x_t, model.schedule.noise_input(t).float()).argmax(-1) == test.y).float().mean()
    assert accuracy > 0.5, f"accuracy {accuracy:.2f} on lightly noised test digits (chance: 0.1)"
    diffusion = MODELS.build(
        "diffusion",
        {"net": "unet", "net_options": {"channels": 8, "multipliers": [1], "head_dim": 8}, "steps": 100},
        event_shape=(1, 8, 8),
        num_classes=10,
        dataset=test,
    )
    classifier, classes = load_classifier(tmp_path, diffusion)
    assert classes == 10 and isinstance(classifier, NoisyClassifier)
