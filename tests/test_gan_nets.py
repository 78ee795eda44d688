"""GAN networks and the normalization bits: spectral norm against SVD and torch, conditional BN and the projection
critic by hand, and a contract over every architecture × norm × conditioning."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from genbits import load_config
from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.models.base import Conditional, Generative
from genbits.models.gan import gan
from genbits.nn.norms import ConditionalBatchNorm, Norm, activation_norm, spectral_norm
from genbits.objectives.adversarial import gan as gan_objective
from genbits.train import train
from genbits.train.parts import build_parts

NORMS = ("none", "batch", "layer", "group", "spectral", "spectral-svd")


@pytest.mark.parametrize("layer", [nn.Linear(7, 5), nn.Conv2d(3, 6, 3), nn.Linear(40, 40)])
def test_power_iteration_spectral_norm_converges_to_svd(layer):
    torch.manual_seed(0)
    weight = layer.weight.detach().clone()
    spectral_norm(layer)
    for _ in range(300):  # training-mode reads advance the persistent vector one iteration each
        normed = layer.weight
    exact = torch.linalg.matrix_norm(weight.flatten(1), ord=2)
    assert torch.allclose(normed, weight / exact, rtol=1e-4, atol=1e-6)
    assert torch.linalg.matrix_norm(normed.detach().flatten(1), ord=2).item() == pytest.approx(1.0, rel=1e-4)


def test_spectral_norm_matches_torch_after_the_same_iterations():
    """Same start, same number of iterations: torch's spectral_norm gives the same normalized weight."""
    torch.manual_seed(1)
    ours, theirs = nn.Linear(6, 4), nn.Linear(6, 4)
    theirs.load_state_dict(ours.state_dict())
    spectral_norm(ours)
    theirs = torch.nn.utils.parametrizations.spectral_norm(theirs, n_power_iterations=1)
    start = ours.parametrizations.weight[0].u  # torch iterates from v: give it the v our u implies
    theirs.parametrizations.weight[0]._v.copy_(F.normalize(ours.parametrizations.weight.original.T @ start, dim=0))
    for _ in range(50):
        a, b = ours.weight, theirs.weight
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_exact_spectral_norm_and_eval_mode_freeze_the_vector():
    layer = spectral_norm(nn.Linear(5, 5), exact=True)
    assert torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item() == pytest.approx(1.0, rel=1e-5)
    power = spectral_norm(nn.Linear(5, 5)).eval()
    u = power.parametrizations.weight[0].u.clone()
    _ = power.weight
    assert torch.equal(u, power.parametrizations.weight[0].u)


def test_conditional_batch_norm_by_hand():
    torch.manual_seed(2)
    norm = ConditionalBatchNorm(3, num_classes=4)
    with torch.no_grad():
        norm.scale.weight.uniform_(0.5, 2)
        norm.shift.weight.normal_()
    x, y = torch.randn(8, 3, 5, 5), torch.randint(0, 4, (8,))
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * norm.scale.weight[y][:, :, None, None]
    expected = expected + norm.shift.weight[y][:, :, None, None]
    assert torch.allclose(norm(x, y), expected, atol=1e-5)


def test_projection_critic_adds_the_label_embedding_inner_product():
    torch.manual_seed(3)
    model = gan((2,), num_classes=3, conditioning="throughout", width=16)
    critic = model.discriminator
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0])
    h = critic.body(x)
    expected = critic.head.linear(h).squeeze(-1) + (critic.head.embed.weight[y] * h).sum(-1)
    assert torch.allclose(critic(x, y), expected, atol=1e-6)


def test_activation_norms_normalize_what_they_claim():
    x = torch.randn(4, 16, 3, 3) * 5 + 2
    layer = activation_norm("layer", 16, spatial=True)(x)
    assert torch.allclose(layer.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)
    group = activation_norm("group", 16, spatial=True)
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 2
    assert isinstance(activation_norm("none", 16, True), nn.Identity)


def test_a_norm_name_resolves_once_into_builders():
    """Activation norms leave weights alone, weight norms put nothing after a layer; labels make batch norm cBN."""
    layer = nn.Linear(3, 3)
    batch = Norm.named("batch")
    assert isinstance(batch.activation(4, True), nn.BatchNorm2d) and batch.weight(layer) is layer
    assert not parametrize.is_parametrized(layer)
    spectral = Norm.named("spectral")
    assert isinstance(spectral.activation(4, False), nn.Identity)
    assert parametrize.is_parametrized(spectral.weight(layer), "weight")
    assert isinstance(Norm.named("batch", num_classes=3).activation(4, True), ConditionalBatchNorm)
    with pytest.raises(ValueError, match="batch norms"):
        Norm.named("layer", num_classes=3)


ARCHS = (("mlp", (2,)), ("dcgan", (1, 14, 14)), ("resnet", (1, 8, 8)))
CASES = (
    [(arch, shape, norm, "none") for (arch, shape), norm in itertools.product(ARCHS, NORMS)]
    + [(arch, shape, "batch", "concat") for arch, shape in ARCHS]
    + [(arch, shape, "spectral", "throughout") for arch, shape in ARCHS]
    + [("dcgan", (1, 28, 28), "spectral", "throughout"), ("resnet", (1, 28, 28), "batch", "concat")]
)


@pytest.mark.parametrize("arch, shape, norm, conditioning", CASES)
def test_every_network_builds_trains_and_round_trips(arch, shape, norm, conditioning):
    torch.manual_seed(4)
    model = gan(shape, num_classes=3, arch=arch, width=8, d_norm=norm, conditioning=conditioning)
    x = torch.rand(6, *shape)
    y = torch.randint(0, 3, (6,))
    losses = gan_objective()(model, Batch(x, y)).per_player
    for player, module in model.players().items():
        params = [p for p in module.parameters()]
        grads = torch.autograd.grad(losses[player], params, allow_unused=True, retain_graph=True)
        missing = [n for (n, _), g in zip(module.named_parameters(), grads, strict=True) if g is None]
        assert not missing, f"{player}: no gradient for {missing}"
    samples = model.eval().sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, *shape)
    if len(shape) == 3:
        assert samples.min() >= 0 and samples.max() <= 1
    copy = gan(shape, num_classes=3, arch=arch, width=8, d_norm=norm, conditioning=conditioning)
    copy.load_state_dict(model.state_dict())
    same = copy.eval().sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, same)


@pytest.mark.parametrize("conditioning", ["concat", "throughout"])
def test_conditional_generator_listens_to_the_label(conditioning):
    torch.manual_seed(5)
    model = gan((1, 8, 8), num_classes=10, arch="dcgan", width=8, conditioning=conditioning).eval()
    with torch.no_grad():  # make the label paths non-trivial (cBN starts as the identity map)
        for module in model.modules():
            if isinstance(module, ConditionalBatchNorm):
                module.scale.weight.uniform_(0.5, 1.5)
    z = torch.randn(4, 32)
    a, b = model.generator(z, torch.zeros(4, dtype=torch.long)), model.generator(z, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(a, b)


def test_bad_options_are_config_errors_naming_the_field():
    bad = ["model.name=gan", "model.conditioning=throughout", "model.g_norm=layer"]
    with pytest.raises(ConfigError, match="model.*'throughout'.*g_norm must be 'batch'"):
        build_parts(load_config("flow-ring", bad), "cpu")
    with pytest.raises(ConfigError, match="model.d_norm"):
        load_config("flow-ring", ["model.name=gan", "model.d_norm=weird"])


def test_mlp_gan_trains_through_the_loop_on_the_ring(tmp_path):
    overrides = [
        "model.name=gan",
        "objective=gan",
        "model.d_norm=spectral",
        "optim.betas=[0.5,0.999]",
        "train.steps=30",
        "train.batch_size=64",
        "train.sample_every=0",
    ]
    result = train(load_config("flow-ring", overrides), tmp_path, progress=False)
    assert result.step == 30
    assert all(torch.isfinite(torch.tensor(v)) for k, v in result.last.items() if k.startswith("loss"))
    assert {"loss/generator", "loss/discriminator"} <= result.last.keys()
    assert (tmp_path / "samples" / "step-0000030.png").exists()


def test_only_a_conditional_gan_has_num_classes():
    """The Conditional contract is hasattr-based: an unconditional GAN must not carry num_classes = None."""
    plain, concat = gan((2,), num_classes=3), gan((2,), num_classes=3, conditioning="concat")
    assert isinstance(plain, Generative) and not isinstance(plain, Conditional) and not hasattr(plain, "num_classes")
    assert isinstance(concat, Conditional) and concat.num_classes == 3


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_temperature_scales_the_latent_noise(t):
    """sample(temperature=T) is G(T·z) for the z the same generator draws; T = 1 is the default sampling."""
    torch.manual_seed(6)
    model = gan((2,), num_classes=3, conditioning="throughout").eval()
    z = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        warm = model.sample(5, y, torch.Generator().manual_seed(1), temperature=t)
        assert torch.equal(warm, model.generator(t * z, y))
        default = model.sample(5, generator=torch.Generator().manual_seed(1))
        assert torch.equal(default, model.sample(5, generator=torch.Generator().manual_seed(1), temperature=1.0))


def test_gan_sampling_refuses_what_it_does_not_understand():
    plain = gan((2,))
    with pytest.raises(ValueError, match="unconditional"):
        plain.sample(3, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="'temprature' is not understood by gan.*did you mean 'temperature'"):
        plain.sample(3, temprature=0.5)
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        plain.sample(3, temperature=0)
