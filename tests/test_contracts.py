"""Contract tests over everything registered: a model, objective, update rule, dataset or experiment is covered the
moment it is registered, or this file fails and says where to add the small setting it runs with.

What each kind promises: a model trains two steps, samples the right shape, round-trips its state dict, honours every
protocol it declares (``genbits.models.base``) and rejects a sampling option it does not understand; an objective
returns one finite scalar loss per player of the model; an update rule steps, and resuming it from a checkpoint
gives the same state as running straight through; a dataset builds deterministically with batches of its declared
shape; an experiment has a test that runs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_same_state, final_state
from torch import Tensor, nn

import genbits.components  # noqa: F401  (fills the registries)
from genbits import load_config
from genbits.data import build_dataset
from genbits.data.base import Batch, SampledDataset
from genbits.data.images import FASHION_MNIST
from genbits.errors import ConfigError
from genbits.experiments import EXPERIMENTS
from genbits.models.base import Classifier, Conditional, Density, Game, Generative, LatentVariable, balanced_labels
from genbits.objectives.base import players_of
from genbits.registry import DATASETS, MODELS, OBJECTIVES, RULES
from genbits.runs import load_run
from genbits.train import train
from genbits.train.parts import build_parts

HERE = Path(__file__).parent
TRAIN = {"steps": 2, "batch_size": 16, "log_every": 1, "sample_every": None, "checkpoint_every": 1, "ema_decay": 0.0}
MLP_GAN = {"name": "gan", "arch": "mlp", "width": 16, "depth": 1, "latent": 4}
FLOW = {"name": "flow", "layers": 2}
VAE = {"name": "vae", "latent": 2, "width": 16, "depth": 1}
BINARY_DIGITS = {"name": "digits", "binarize": True}
DIFFUSION = {"name": "diffusion", "net_options": {"width": 16, "depth": 1}, "steps": 20}
NOISY_CLASSIFIER = {"name": "noisy-classifier", "channels": 8, "multipliers": [1], "head_dim": 8, "steps": 50}
HVAE = {"name": "hvae", "channels": 8, "latent_channels": 2, "scales": 2, "groups_per_scale": 1, "preprocess": 0}

# One small run per registered name: {data, model, objective, optim} merged over TRAIN.
MODEL_SETTINGS: dict[str, dict[str, Any]] = {
    "flow": {"data": "ring", "model": FLOW, "objective": "likelihood"},
    "gaussian": {"data": "bimodal", "model": "gaussian", "objective": "likelihood"},
    "gan": {"data": "ring", "model": MLP_GAN, "objective": "gan"},
    "conditional gan": {"data": "digits", "model": {**MLP_GAN, "conditioning": "concat"}, "objective": "gan"},
    "dirac-gan": {"data": "dirac", "model": "dirac-gan", "objective": "gan", "optim": {"optimizer": "sgd"}},
    "vae": {"data": "ring", "model": {**VAE, "prior": "flow", "flow_layers": 1}, "objective": "elbo"},
    "vae conv, bernoulli, flow posterior": {
        "data": BINARY_DIGITS,
        "model": {**VAE, "arch": "conv", "width": 4, "likelihood": "bernoulli", "posterior": "flow", "norm": "batch"},
        "objective": "elbo",
    },
    "vae logistic mixture, vampprior": {
        "data": "digits",
        "model": {**VAE, "likelihood": "logistic-mixture", "components": 2, "prior": "vamp", "pseudo_inputs": 3},
        "objective": {"name": "iwae", "k": 3},
    },
    "diffusion": {"data": "ring", "model": DIFFUSION, "objective": "denoising"},
    "conditional diffusion": {
        "data": "digits",
        "model": {**DIFFUSION, "conditional": True, "schedule": "sigma", "schedule_options": {"bound_steps": 20}},
        "objective": {"name": "denoising", "weighting": "min-snr", "p_uncond": 0.2},
    },
    "noisy-classifier": {"data": "digits", "model": NOISY_CLASSIFIER, "objective": "noisy-classification"},
    "hvae": {
        "data": "digits",
        "model": {**HVAE, "components": 2},
        "objective": {"name": "elbo", "warmup": 0.5, "kl_balancing": True},
    },
    "made": {"data": "ring", "model": {"name": "made", "hidden": [16], "orderings": 2}, "objective": "likelihood"},
    "binarized made": {
        "data": BINARY_DIGITS,
        "model": {"name": "made", "hidden": [16], "orderings": 2},
        "objective": "likelihood",
    },
    "pixelcnn": {
        "data": "digits",
        "model": {"name": "pixelcnn", "channels": 4, "layers": 2},
        "objective": "likelihood",
    },
    "conditional pixelcnn": {
        "data": BINARY_DIGITS,
        "model": {"name": "pixelcnn", "channels": 4, "layers": 2, "conditional": True},
        "objective": "likelihood",
    },
    "transformer": {
        "data": {"name": "text", "path": str(HERE.parent / "LICENSE"), "block_size": 16},
        "model": {"name": "transformer", "width": 16, "depth": 1, "heads": 2, "weights": "sigma-reparam"},
        "objective": "likelihood",
    },
}
OBJECTIVE_SETTINGS: dict[str, dict[str, Any]] = {
    "likelihood": {"data": "ring", "model": FLOW},
    "reverse-kl": {"data": "bimodal", "model": FLOW},
    "quadrature": {
        "data": {"name": "bimodal", "dim": 1},
        "model": "gaussian",
        "objective": {"name": "quadrature", "divergence": "forward-kl", "limits": [[-8.0, 8.0]], "nodes": [64]},
        "train": {"precision": "fp64"},
    },
    "gan": {"data": "ring", "model": MLP_GAN, "objective": {"name": "gan", "r1": 1.0}},
    "least-squares": {"data": "ring", "model": MLP_GAN},
    "f-gan": {"data": "ring", "model": MLP_GAN, "objective": {"name": "f-gan", "divergence": "kl"}},
    "elbo": {"data": "ring", "model": VAE, "objective": {"name": "elbo", "warmup": 0.5, "free_bits": 0.1}},
    "iwae": {"data": BINARY_DIGITS, "model": {**VAE, "likelihood": "bernoulli"}, "objective": {"name": "iwae", "k": 4}},
    "denoising": {"data": "digits", "model": {**DIFFUSION, "prediction": "v", "conditional": True}},
    "noisy-classification": {"data": "digits", "model": NOISY_CLASSIFIER},
    "mmd-gan": {"data": "ring", "model": MLP_GAN},
}
GAME = {"data": "ring", "model": MLP_GAN, "objective": "gan", "optim": {"optimizer": "sgd", "lr": 0.01}}
RULE_SETTINGS: dict[str, dict[str, Any]] = {
    "gd": {"data": "ring", "model": FLOW, "objective": "likelihood"},
    "alternating": {**GAME, "rule": {"n_critic": 2}},
    "ode": {**GAME, "rule": {"method": "heun", "regularizer": 0.1}},
    "extragradient": GAME,
    "optimistic": GAME,
    "consensus": GAME,
    "drift": {**GAME, "rule": {"updates": "alternating"}},
}
DATASET_SETTINGS: dict[str, dict[str, Any] | Callable[[Path], dict[str, Any]]] = {
    "ring": {},
    "grid": {},
    "mog16": {},
    "bimodal": {},
    "moons": {},
    "spirals": {},
    "checkerboard": {},
    "dirac": {},
    "digits": {},
    "fashion-mnist": {"size": 14},
    "idx": {"path": FASHION_MNIST, "size": 14},
    "png-folder": lambda tmp: png_folder(tmp),
    "text": lambda tmp: text_file(tmp),
}
# The test that runs each experiment (``file::test``); it must call ``genbits experiment <name>``.
EXPERIMENT_TESTS = {
    "mode-seeking": "test_experiments.py::test_mode_seeking_forward_covers_reverse_seeks",
    "divergences": "test_divergences.py::test_smoke_run_writes_figure_results_and_table",
    "dirac-gan": "test_gan_experiments_mog.py::test_dirac_gan_trajectories_follow_the_spectral_radius",
    "gan-mog": "test_gan_experiments_mog.py::test_gan_mog_smoke",
    "gan-late-degradation": "test_gan_experiments_images.py::test_late_degradation_scores_both_arms_along_training",
    "gan-mog-rk4-step": "test_gan_experiments_mog.py::test_rk4_step_sweep_chooses_by_its_rule",
    "gan-spectral-norm": "test_gan_experiments_images.py::test_spectral_norm_sweep_scores_and_rejudges_every_run",
    "gan-adam-beta1": "test_gan_experiments_images.py::test_adam_beta1_curves_at_any_thread_count",
    "gan-batch-size": "test_gan_experiments_images.py::test_batch_size_runs_fixed_steps_beside_fixed_samples",
    "gan-conditioning": "test_gan_experiments_images.py::test_conditioning_reports_fid_intra_class_fid_and_accuracy",
    "vae-posterior-holes": "test_vae_experiments.py::test_posterior_holes_smoke_measures_every_variant",
    "vae-posterior-holes-digits": "test_vae_experiments.py::test_posterior_holes_smoke_measures_every_variant",
    "latent-families": "test_vae_experiments.py::test_latent_families_smoke_scores_every_family",
    "nvae-bits": "test_nvae_bits.py::test_smoke_one_step_writes_table_figure_and_results",
    "pixelcnn-guidance": "test_pixelcnn_guidance.py::test_smoke_scores_every_scale",
    "diffusion-samplers": "test_diffusion_experiments.py::test_diffusion_samplers_smoke_writes_results_and_figure",
    "diffusion-guidance": "test_diffusion_guidance.py::test_guidance_sweep_runs_end_to_end_at_smoke_size",
    "diffusion-stability": "test_diffusion_stability.py::test_diffusion_stability_smoke_scores_both_families",
    "diffusion-elbo": "test_diffusion_elbo.py::test_diffusion_elbo_smoke_scores_every_arm",
    "lm-entropy-collapse": "test_lm_experiments.py::test_entropy_collapse_smoke_reads_entropy_per_layer",
    "lm-adam-vs-sgd": "test_lm_experiments.py::test_adam_vs_sgd_smoke_picks_each_best_lr",
}


def config_of(setting: dict[str, Any], **train_options: Any):
    """A full config from a small setting (``rule`` holds the update rule's options, merged into optim.rule)."""
    raw = {k: v for k, v in setting.items() if k not in ("rule", "train")}
    return load_config(
        {**raw, "train": {**TRAIN, **setting.get("train", {}), **train_options}},
        [f"optim.rule.{k}={v}" for k, v in setting.get("rule", {}).items()],
    )


def setting_for(table: dict[str, Any], name: str, table_name: str) -> Any:
    """The small setting of ``name``, or a failure that says where to add one."""
    if name not in table:
        pytest.fail(f"{name!r} is registered but has no small setting: add one to {table_name} in {__file__}")
    return table[name]


def covered(registry_names: list[str], table: dict[str, Any]) -> list[str]:
    """Every registered name (so a new one fails until it has a setting), plus extra variants of the table."""
    return sorted(set(registry_names) | set(table))


def first_batch(dataset: Any, n: int, seed: int) -> Batch:
    """``n`` examples: drawn with a seeded generator from a drawn dataset, the first ``n`` from a finite one."""
    if isinstance(dataset, SampledDataset):
        return dataset.sample(n, torch.Generator().manual_seed(seed))
    return dataset.get(torch.arange(min(n, len(dataset))))


# ----------------------------------------------------------------------------------------------------
# Models.


def check_classifier(model: nn.Module, dataset: Any) -> None:
    """A classifier samples nothing: it gives a normalized log p(y | x, noise) per example."""
    assert not isinstance(model, Generative), f"{type(model).__name__} both classifies and samples"
    x, noise = first_batch(dataset, 6, seed=0).x, torch.linspace(0, 1, 6)
    log_p = torch.stack([model.log_prob_class(x, noise, torch.full((6,), k)) for k in range(model.num_classes)])
    assert log_p.shape == (model.num_classes, 6) and torch.isfinite(log_p).all(), (
        f"log_prob_class: {tuple(log_p.shape)}"
    )
    torch.testing.assert_close(log_p.logsumexp(0), torch.zeros(6), atol=1e-5, rtol=0)


def check_model(model: nn.Module, dataset: Any) -> None:
    """Every promise ``model`` makes through the protocols it declares, checked on a few examples of ``dataset``."""
    if isinstance(model, Classifier):
        return check_classifier(model, dataset)
    shape = tuple(dataset.event_shape)
    assert isinstance(model, Generative), f"{type(model).__name__} does not sample"
    conditional = isinstance(model, Conditional)
    if conditional:
        assert isinstance(model.num_classes, int) and model.num_classes >= 1, model.num_classes
    y = balanced_labels(6, model.num_classes) if conditional else None
    samples = model.sample(6, y, torch.Generator().manual_seed(0))
    assert tuple(samples.shape) == (6, *shape), f"sample(6) has shape {tuple(samples.shape)}, expected {(6, *shape)}"
    assert torch.isfinite(samples).all(), "non-finite samples"
    again = model.sample(6, y, torch.Generator().manual_seed(0))
    assert torch.equal(samples, again), "the same generator must give the same samples"
    with pytest.raises(ConfigError, match="not_an_option"):
        model.sample(2, y[:2] if conditional else None, not_an_option=1)
    batch = first_batch(dataset, 6, seed=0)
    x, labels = batch.x.to(samples.dtype), batch.y if conditional else None
    if isinstance(model, Density):
        log_p = model.log_prob(x, labels)
        assert log_p.shape == (len(x),) and torch.isfinite(log_p).all(), f"log_prob: shape {tuple(log_p.shape)}"
    if isinstance(model, LatentVariable):
        bound = model.elbo(x, labels)
        assert bound.shape == (len(x),) and torch.isfinite(bound).all(), f"elbo: shape {tuple(bound.shape)}"
    if isinstance(model, Game):
        players = model.players()
        assert players and all(isinstance(p, nn.Module) for p in players.values()), players
        owned = [id(p) for player in players.values() for p in player.parameters()]
        assert len(owned) == len(set(owned)), "a parameter belongs to two players"
        assert set(owned) == {id(p) for p in model.parameters()}, "every parameter must belong to one player"


def same_outputs(a: nn.Module, b: nn.Module, dataset: Any) -> bool:
    """Same samples from the same generator, and the same log-density where there is one (a classifier: the same
    class log-probabilities)."""
    if isinstance(a, Classifier):
        x, noise, y = first_batch(dataset, 4, seed=1).x, torch.linspace(0, 1, 4), torch.arange(4) % a.num_classes
        return torch.equal(a.log_prob_class(x, noise, y), b.log_prob_class(x, noise, y))
    y = balanced_labels(4, a.num_classes) if isinstance(a, Conditional) else None
    same = torch.equal(
        a.sample(4, y, torch.Generator().manual_seed(1)), b.sample(4, y, torch.Generator().manual_seed(1))
    )
    if isinstance(a, Density):
        x = first_batch(dataset, 4, seed=1).x
        x = x.to(next(a.parameters()).dtype) if x.is_floating_point() else x  # token ids stay integers
        labels = first_batch(dataset, 4, seed=1).y if y is not None else None
        same = same and torch.equal(a.log_prob(x, labels), b.log_prob(x, labels))
    return same


@pytest.mark.parametrize("name", covered(MODELS.names(), MODEL_SETTINGS))
def test_every_model_trains_samples_round_trips_and_keeps_its_contracts(name, tmp_path):
    setting = setting_for(MODEL_SETTINGS, name, "MODEL_SETTINGS")
    config = config_of(setting)
    train(config, tmp_path, progress=False)
    run = load_run(tmp_path)
    assert run.step == 2
    check_model(run.model, run.dataset)
    fresh = build_parts(config).model.eval()
    assert not same_outputs(fresh, run.model, run.dataset), "training two steps changed nothing"
    fresh.load_state_dict(run.model.state_dict())
    assert same_outputs(fresh, run.model, run.dataset), "a state dict round trip changed the model"


class OvershootingFlow(nn.Module):
    """A broken toy component: declares a density and samples, but samples one example too many."""

    SAMPLING_OPTIONS: tuple[str, ...] = ()

    def __init__(self, event_shape: tuple[int, ...], num_classes: int | None = None, dataset: Any = None):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(event_shape))

    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        return torch.randn((n + 1, *self.shift.shape), generator=generator) + self.shift

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return -0.5 * ((x - self.shift) ** 2).sum(-1)


def test_the_model_check_catches_a_broken_component(monkeypatch):
    """A registered model that breaks its contract fails the check, with a message that says how."""
    monkeypatch.setitem(MODELS._table, "overshooting", OvershootingFlow)
    dataset = build_dataset("ring", {})
    model = MODELS.build("overshooting", {}, event_shape=dataset.event_shape, num_classes=None, dataset=dataset)
    with pytest.raises(AssertionError, match=r"sample\(6\) has shape \(7, 2\), expected \(6, 2\)"):
        check_model(model, dataset)


def test_a_registered_name_without_a_setting_fails_saying_where_to_add_it():
    with pytest.raises(pytest.fail.Exception, match="add one to MODEL_SETTINGS in .*test_contracts.py"):
        setting_for(MODEL_SETTINGS, "brand-new-model", "MODEL_SETTINGS")


# ----------------------------------------------------------------------------------------------------
# Objectives.


@pytest.mark.parametrize("name", covered(OBJECTIVES.names(), OBJECTIVE_SETTINGS))
def test_every_objective_gives_one_finite_loss_per_player(name):
    setting = setting_for(OBJECTIVE_SETTINGS, name, "OBJECTIVE_SETTINGS")
    parts = build_parts(config_of({"objective": name, **setting}))
    batch = first_batch(parts.dataset, 16, seed=0)
    batch = Batch(batch.x.to(parts.dtype or batch.x.dtype), batch.y)
    losses = parts.objective(parts.model, batch)
    assert set(losses.per_player) == set(players_of(parts.model)), (set(losses.per_player), players_of(parts.model))
    for player, loss in losses.per_player.items():
        assert loss.shape == () and torch.isfinite(loss), (player, loss)
        assert loss.requires_grad, f"{player}'s loss does not depend on the parameters"
    assert all(np.isfinite(v) for v in losses.scalars().values()), losses.scalars()


# ----------------------------------------------------------------------------------------------------
# Update rules.


@pytest.mark.parametrize("name", covered(RULES.names(), RULE_SETTINGS))
def test_every_rule_steps_and_resumes_exactly(name, tmp_path):
    setting = setting_for(RULE_SETTINGS, name, "RULE_SETTINGS")
    setting = {**setting, "optim": {**setting.get("optim", {}), "rule": {"name": name}}}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(config_of(setting, steps=3), straight, progress=False)
    train(config_of(setting, steps=1), resumed, progress=False)
    train(config_of(setting, steps=3), resumed, progress=False)
    a = final_state(straight)
    before = build_parts(config_of(setting)).model.state_dict()
    assert any(not torch.equal(before[k], v) for k, v in a["model"].items()), f"{name} did not move the model"
    assert_same_state(a, final_state(resumed))


# ----------------------------------------------------------------------------------------------------
# Datasets.


def png_folder(tmp: Path) -> dict[str, Any]:
    """Two 6×6 grey PNGs in two class folders."""
    from PIL import Image

    for k, label in enumerate(("a", "b")):
        (tmp / label).mkdir(parents=True)
        Image.fromarray(np.full((6, 6), 40 * (k + 1), dtype=np.uint8), mode="L").save(tmp / label / "x.png")
    return {"path": str(tmp)}


def text_file(tmp: Path) -> dict[str, Any]:
    """A few lines of UTF-8 text, non-ASCII included."""
    (tmp / "t.txt").write_text("Grüße, world!\nA second line of text.\n" * 8, encoding="utf-8")
    return {"path": str(tmp / "t.txt"), "block_size": 8}


@pytest.mark.parametrize("name", covered(DATASETS.names(), DATASET_SETTINGS))
def test_every_dataset_builds_deterministically_with_its_declared_shape(name, tmp_path):
    setting = setting_for(DATASET_SETTINGS, name, "DATASET_SETTINGS")
    options = setting(tmp_path) if callable(setting) else setting
    if options.get("path") == FASHION_MNIST and not Path(FASHION_MNIST).is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    one, two = build_dataset(name, options, seed=3), build_dataset(name, options, seed=3)
    a, b = first_batch(one, 8, seed=5), first_batch(two, 8, seed=5)
    assert torch.equal(a.x, b.x) and (a.y is None) == (b.y is None), "the same seed must give the same data"
    assert tuple(a.x.shape[1:]) == tuple(one.event_shape), (tuple(a.x.shape), one.event_shape)
    assert torch.isfinite(a.x).all()
    if one.levels is not None:
        assert a.x.min() >= 0 and a.x.max() <= 1, "images are floats in [0, 1]"
    if one.num_classes is not None:
        assert a.y is not None and a.y.dtype == torch.int64
        assert a.y.min() >= 0 and a.y.max() < one.num_classes, (a.y, one.num_classes)
    if one.has_log_prob:
        assert one.log_prob(a.x).shape == (len(a.x),)


# ----------------------------------------------------------------------------------------------------
# Experiments.


@pytest.mark.parametrize("name", covered(list(EXPERIMENTS), EXPERIMENT_TESTS))
def test_every_experiment_has_a_test_that_runs_it(name):
    """Each experiment's own test runs it end to end (one tiny run each here would repeat them at ~6 min)."""
    target = setting_for(EXPERIMENT_TESTS, name, "EXPERIMENT_TESTS")
    file, test = target.split("::")
    source = (HERE / file).read_text()
    match = re.search(rf"^def {test}\(.*?(?=^def |\Z)", source, re.S | re.M)
    assert match, f"{target} does not exist"
    assert f'"{name}"' in match.group(0), f"{target} does not run the experiment {name!r}"
