"""MADE and the gated PixelCNN against independent references: autograd for the masks and the receptive field,
exhaustive sums and quadrature for normalization, sample frequencies against the model's own probabilities, and the
exact (never dequantized) discrete likelihood in training and evaluation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import assert_same_state, final_state

import genbits.components  # noqa: F401  (fills the registries)
from genbits import load_config, load_run
from genbits.data import build_dataset
from genbits.data.base import Batch, TensorDataset
from genbits.errors import ConfigError
from genbits.models.autoregressive import MADE, Categorical, GaussianMixture, PixelCNN
from genbits.models.base import Discrete
from genbits.objectives.likelihood import MaximumLikelihood
from genbits.registry import MODELS
from genbits.runs.evaluate import evaluate
from genbits.train import train


def toy_images(levels: int, size: int, classes: int | None = None) -> TensorDataset:
    """A stand-in dataset: what the factories read from it is the event shape, the levels and the classes."""
    x = torch.zeros(4, 1, size, size)
    y = None if classes is None else torch.zeros(4, dtype=torch.long)
    return TensorDataset(x, y, levels=levels, num_classes=classes, name="toy")


def build(name: str, dataset, **options):
    return MODELS.build(
        name, options, event_shape=dataset.event_shape, num_classes=dataset.num_classes, dataset=dataset
    )


def all_images(levels: int, size: int) -> torch.Tensor:
    """Every image of size×size pixels with ``levels`` grey levels, as values in [0, 1]."""
    grid = torch.tensor(list(itertools.product(range(levels), repeat=size * size)), dtype=torch.float64)
    return (grid / (levels - 1)).reshape(-1, 1, size, size)


def dependence(f, x: torch.Tensor) -> torch.Tensor:
    """Which inputs each output depends on: |∂f/∂x| summed over a batch of random points, > 0. (outputs, inputs)."""
    jacobians = [torch.autograd.functional.jacobian(f, point, vectorize=True).reshape(-1, point.numel()) for point in x]
    return torch.stack(jacobians).abs().sum(0) > 0


# ----------------------------------------------------------------------------------------------------
# MADE.


@pytest.mark.parametrize("head", [GaussianMixture(2), Categorical(3)], ids=["gaussians", "levels"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_made_output_i_depends_exactly_on_the_inputs_before_i_in_each_ordering(head, seed):
    features = 6
    model = MADE((features,), (64, 64), head, orderings=3, seed=seed).double()
    for k in range(3):
        order = model.orders[k]
        params = lambda x, k=k: model.params(x[None], k)[0].sum(-1)  # noqa: E731  (D outputs)
        reaches = dependence(params, torch.rand(8, features, dtype=torch.float64))
        assert torch.equal(reaches, order[None, :] < order[:, None]), (k, order)
    assert not torch.equal(model.orders[1], model.orders[2]), "orderings are drawn at random"
    assert torch.equal(model.orders[0], torch.arange(1, features + 1)), "set 0 is the natural ordering"


def test_made_density_on_the_plane_integrates_to_one():
    """Quadrature over [−10, 10]² (midpoint-like sum on a 0.1 grid; the conditionals' scales are 0.3 to 4 at this
    initialization): the ensemble of three orderings of Gaussian-mixture conditionals is a normalized density;
    the same network unmasked is not."""
    torch.manual_seed(0)
    model = build("made", build_dataset("ring", {}), hidden=(32, 32), orderings=3, components=3).double().eval()
    nodes = torch.linspace(-10, 10, 201, dtype=torch.float64)
    grid, cell = torch.cartesian_prod(nodes, nodes), (nodes[1] - nodes[0]) ** 2
    with torch.no_grad():
        assert (model.log_prob(grid).exp() * cell).sum().item() == pytest.approx(1, abs=1e-6)
        for name in ("mask0", "mask1", "mask2"):
            getattr(model, name).fill_(1)  # every output sees every input: no longer a chain of conditionals
        assert abs((model.log_prob(grid).exp() * cell).sum().item() - 1) > 0.05


def test_binary_made_sums_to_one_and_samples_its_own_probabilities():
    torch.manual_seed(0)
    model = build("made", toy_images(2, 2), hidden=(16,), orderings=2).double().eval()
    with torch.no_grad():
        model.layers[-1].weight.mul_(5)
    images = all_images(2, 2)
    with torch.no_grad():
        p = model.log_prob(images).exp()
        assert p.sum().item() == pytest.approx(1, abs=1e-12)
        samples = model.sample(20000, generator=torch.Generator().manual_seed(0))
    index = (samples.reshape(-1, 4).round() * torch.tensor([8, 4, 2, 1])).sum(-1).long()
    frequency = torch.bincount(index, minlength=16).double() / len(samples)
    stderr = (p * (1 - p) / len(samples)).sqrt()
    assert ((frequency - p).abs() <= 5 * stderr + 1e-4).all(), (frequency, p)


def test_made_trains_on_one_ordering_per_call_and_evaluates_the_ensemble():
    model = build("made", toy_images(2, 2), hidden=(16,), orderings=3).double()
    x = all_images(2, 2)[:5]
    per_set = torch.stack(
        [model.head.log_prob(model.params(x.reshape(5, 4), k), x.reshape(5, 4)).sum(-1) for k in range(3)]
    )
    torch.manual_seed(3)
    k = int(torch.randint(3, ()))
    torch.manual_seed(3)
    assert torch.equal(model.train().log_prob(x), per_set[k])
    ensemble = per_set.exp().mean(0).log()
    assert torch.allclose(model.eval().log_prob(x), ensemble, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# PixelCNN.


@pytest.mark.parametrize("conditional", [False, True])
def test_pixelcnn_sees_every_earlier_pixel_and_no_later_one(conditional):
    """No blind spot: with enough layers for the receptive field to cover a 5×5 image, the logits of pixel (i, j)
    depend on exactly the pixels before it in raster order (autograd), conditioning or not."""
    torch.manual_seed(0)
    dataset = toy_images(4, 5, classes=3 if conditional else None)
    model = build("pixelcnn", dataset, channels=8, layers=5, conditional=conditional).double()
    y = torch.tensor([1]) if conditional else None
    weights = torch.randn(4, dtype=torch.float64)
    logits = lambda x: (model.params(x.reshape(1, 1, 5, 5), y) @ weights).reshape(25)  # noqa: E731
    reaches = dependence(logits, torch.rand(2, 25, dtype=torch.float64))
    assert torch.equal(reaches, torch.ones(25, 25).tril(-1).bool())


def test_pixelcnn_with_fewer_layers_sees_a_window_that_grows_with_depth():
    """The check above can fail: two layers reach only the nearest rows and columns."""
    model = build("pixelcnn", toy_images(4, 5), channels=8, layers=2).double()
    logits = lambda x: model.params(x.reshape(1, 1, 5, 5), None).sum(-1).reshape(25)  # noqa: E731
    reaches = dependence(logits, torch.rand(2, 25, dtype=torch.float64))
    assert not reaches[24, 0] and reaches[24, 23] and reaches[24, 18]
    assert not reaches.triu().any()


@pytest.mark.parametrize("output", ["softmax", "logistic-mixture"])
def test_pixelcnn_sums_to_one_over_every_image_of_three_levels(output):
    """Exhaustively over the 3⁴ images of 2×2 pixels: each pixel's conditional (softmax, or the discretized logistic
    mixture of nn.likelihoods, whose own test checks one pixel) chained by the network sums to 1, for p(x | y)
    and for the null class's p(x); the level log-probabilities sampling uses agree with log_prob."""
    torch.manual_seed(0)
    model = build("pixelcnn", toy_images(3, 2, classes=2), channels=8, layers=2, output=output, conditional=True)
    model = model.double().eval()
    images = all_images(3, 2)
    with torch.no_grad():
        for y in (torch.zeros(len(images), dtype=torch.long), None):  # p(x | y) and the null class's p(x)
            assert model.log_prob(images, y).exp().sum().item() == pytest.approx(1, abs=1e-10)
        params = model.params(images, torch.ones(len(images), dtype=torch.long))
        per_level = model.head.level_log_probs(params).gather(-1, (images * 2).round().long()[..., None])[..., 0]
        assert torch.allclose(per_level, model.head.log_prob(params, images), atol=1e-12)


def guided_probabilities(model: PixelCNN, y: int, w: float) -> torch.Tensor:
    """By hand: Π over pixels of softmax((1 + w)·log p(k | x_<, y) − w·log p(k | x_<)) at each 2×2 binary image."""
    images = all_images(2, 2)
    classes = torch.full((len(images),), y)
    conditional = torch.log_softmax(model.params(images, classes), -1)
    unconditional = torch.log_softmax(model.params(images, torch.full_like(classes, model.num_classes)), -1)
    guided = torch.log_softmax((1 + w) * conditional - w * unconditional, -1)
    picked = guided.gather(-1, images.long()[..., None])[..., 0]
    return picked.flatten(1).sum(-1).exp()


@pytest.mark.parametrize("w", [0.0, 2.0])
def test_pixelcnn_guided_samples_follow_the_guided_conditionals(w):
    torch.manual_seed(1)
    model = build("pixelcnn", toy_images(2, 2, classes=2), channels=8, layers=2, conditional=True).double().eval()
    with torch.no_grad():
        model.output[-1].weight.mul_(4)
        p = guided_probabilities(model, 1, w)
        samples = model.sample(3000, torch.ones(3000, dtype=torch.long), torch.Generator().manual_seed(0), guidance=w)
    if w == 0:
        assert torch.allclose(p, model.log_prob(all_images(2, 2), torch.ones(16, dtype=torch.long)).exp())
    index = (samples.reshape(-1, 4).round() * torch.tensor([8, 4, 2, 1])).sum(-1).long()
    frequency = torch.bincount(index, minlength=16).double() / len(samples)
    stderr = (p * (1 - p) / len(samples)).sqrt()
    assert ((frequency - p).abs() <= 5 * stderr + 1e-4).all(), (frequency, p)


def test_pixelcnn_drops_labels_with_probability_p_uncond_in_training_only():
    model = build("pixelcnn", toy_images(2, 3, classes=2), channels=4, layers=1, conditional=True, p_uncond=0.5)
    model.eval()
    x, y = all_images(2, 3)[:200].float(), torch.ones(200, dtype=torch.long)
    conditional, unconditional = model.log_prob(x, y), model.log_prob(x, None)
    with torch.no_grad():
        trained = model.train().log_prob(x, y)
    dropped = torch.isclose(trained, unconditional) & ~torch.isclose(trained, conditional)
    kept = torch.isclose(trained, conditional)
    assert (dropped | kept).all() and 60 < int(dropped.sum()) < 140  # Binomial(200, 0.5)
    assert torch.equal(model.eval().log_prob(x, y), conditional)


# ----------------------------------------------------------------------------------------------------
# Exact discrete likelihood in training and evaluation; bad input.


def test_the_likelihood_objective_scores_a_discrete_model_on_the_levels_themselves():
    dataset = build_dataset("digits", {})
    model = build("pixelcnn", dataset, channels=4, layers=1)
    assert isinstance(model, Discrete) and model.levels == 17
    batch = dataset.get(torch.arange(8))
    losses = MaximumLikelihood(dataset.levels)(model, batch)
    assert torch.equal(losses.per_player["model"], -model.log_prob(batch.x).mean())  # no noise, no offset
    with pytest.raises(ConfigError, match="distribution on 17 levels, not on data with 2 levels"):
        MaximumLikelihood(2)(model, Batch(batch.x.round(), None))
    made = build("made", dataset, hidden=(8,))
    with pytest.raises(ConfigError, match="not on continuous data"):
        MaximumLikelihood(None)(made, batch)


def test_eval_reports_the_exact_nll_of_the_levels_in_bits_per_dim(tmp_path):
    overrides = ["train.steps=2", "train.sample_every=null", "model.channels=4", "model.layers=1"]
    train(load_config("pixelcnn-digits", overrides), tmp_path, progress=False)
    run = load_run(tmp_path)
    result = evaluate(run, n=50)
    test = build_dataset("digits", {}, split="test")
    with torch.no_grad():
        nll = -run.model.log_prob(test.x[:50], test.y[:50] if hasattr(run.model, "num_classes") else None)
    assert result["likelihood"] == "exact discrete" and result["n"] == 50
    assert result["test_nll"] == pytest.approx(nll.mean().item(), rel=1e-6)
    assert result["bits_per_dim"] == pytest.approx(result["test_nll"] / (64 * math.log(2)), rel=1e-12)


@pytest.mark.parametrize(
    ("name", "data", "options", "message"),
    [
        ("pixelcnn", "ring", {}, "pixelcnn needs one-channel images with grey levels"),
        ("pixelcnn", "digits", {"kernel": 4}, "kernel must be odd"),
        ("pixelcnn", "digits", {"p_uncond": 1.0}, r"p_uncond must be in \[0, 1\)"),
        ("pixelcnn", "digits", {"output": "gaussian"}, "output"),
        ("pixelcnn", {"name": "digits", "binarize": True}, {"output": "logistic-mixture"}, "needs grey-level data"),
        ("made", "ring", {"orderings": 0}, "orderings must be >= 1"),
    ],
)
def test_bad_options_are_one_line_config_errors(name, data, options, message):
    dataset = build_dataset(data, {}) if isinstance(data, str) else build_dataset(data["name"], {"binarize": True})
    with pytest.raises(ConfigError, match=message):
        build(name, dataset, **options)


def test_guidance_needs_a_conditional_model_trained_with_the_null_class():
    unconditional = build("pixelcnn", toy_images(2, 2), channels=4, layers=1)
    with pytest.raises(ConfigError, match="guidance needs a class-conditional pixelcnn"):
        unconditional.sample(2, guidance=1.0)
    with pytest.raises(ConfigError, match="guidance must be a finite number >= 0"):
        unconditional.sample(2, guidance=-1.0)
    never_dropped = build("pixelcnn", toy_images(2, 2, classes=2), channels=4, layers=1, conditional=True, p_uncond=0)
    with pytest.raises(ValueError, match="trained with p_uncond=0"):
        never_dropped.log_prob(all_images(2, 2).float())


@pytest.mark.parametrize("preset", ["pixelcnn-digits", "made-ring"], ids=["pixelcnn-conditional", "made-orderings"])
def test_runs_with_random_label_drops_and_orderings_resume_exactly(preset, tmp_path):
    """Label dropout and ordering draws come from the global RNG, which checkpoints carry: 1 + 2 steps = 3 steps."""
    small = ["train.sample_every=null", "train.checkpoint_every=1", "train.batch_size=8"]
    small += ["model.channels=4", "model.layers=1"] if preset.startswith("pixelcnn") else ["model.hidden=[16]"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(load_config(preset, [*small, "train.steps=3"]), straight, progress=False)
    train(load_config(preset, [*small, "train.steps=1"]), resumed, progress=False)
    train(load_config(preset, [*small, "train.steps=3"]), resumed, progress=False)
    assert_same_state(final_state(straight), final_state(resumed))
