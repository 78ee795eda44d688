"""Denoiser networks: the interface net(x, noise, y) -> x-shaped, conditioning that reaches the output, the learned
null class, gradients to every parameter, and the embeddings against their closed form and diffusers'."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genbits.nn.embeddings import ConditionEmbedding, sinusoidal
from genbits.nn.mlp import MLPDenoiser
from genbits.nn.norms import Norm

NETS = {
    "mlp-2d": lambda classes: MLPDenoiser((2,), width=16, depth=2, num_classes=classes),
    "mlp-image": lambda classes: MLPDenoiser((1, 4, 4), width=16, depth=1, num_classes=classes, dropout=0.1),
    "mlp-group-relu": lambda classes: MLPDenoiser(
        (3,), width=16, depth=2, num_classes=classes, norm=Norm.named("group"), activation=nn.ReLU
    ),
}


def inputs(net: nn.Module, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, *net.shape, generator=generator), torch.rand(batch, generator=generator)


@pytest.mark.parametrize("name", NETS)
def test_output_has_the_input_shape_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    net = NETS[name](3)
    x, noise = inputs(net)
    y = torch.tensor([0, 1, 2, 3, 0, 1])  # 3 = the null class
    out = net(x, noise, y)
    assert out.shape == x.shape
    out.square().sum().backward()
    silent = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"no gradient reaches {silent}"


@pytest.mark.parametrize("name", NETS)
def test_noise_level_and_class_change_the_output(name):
    torch.manual_seed(0)
    net = NETS[name](3).eval()
    x, noise = inputs(net)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        base = net(x, noise, y)
        assert not torch.allclose(base, net(x, noise, (y + 1) % 3)), "the class does not reach the output"
        assert not torch.allclose(base, net(x, noise + 0.001, y)), "a 1e-3 noise-level step does not reach the output"
        # per example: changing one example's condition changes only that example
        other = y.clone()
        other[0] = 2
        changed = (net(x, noise, other) - base).flatten(1).abs().amax(1)
        assert changed[0] > 0 and torch.all(changed[1:] == 0)


@pytest.mark.parametrize("name", NETS)
def test_no_labels_means_the_learned_null_class(name):
    torch.manual_seed(0)
    net = NETS[name](3).eval()
    x, noise = inputs(net)
    with torch.no_grad():
        unconditional = net(x, noise, None)
        torch.testing.assert_close(unconditional, net(x, noise, torch.full((6,), 3)), rtol=0, atol=0)
        assert not torch.allclose(unconditional, net(x, noise, torch.zeros(6, dtype=torch.long)))
    assert net.num_classes == 3


@pytest.mark.parametrize("name", NETS)
def test_an_unconditional_net_refuses_labels(name):
    net = NETS[name](None)
    x, noise = inputs(net)
    assert net(x, noise).shape == x.shape
    assert not hasattr(net, "num_classes")
    with pytest.raises(ValueError, match="unconditional"):
        net(x, noise, torch.zeros(6, dtype=torch.long))


def test_sinusoidal_embedding_is_the_closed_form():
    values = torch.tensor([0.0, 1.0, 250.0, 999.0])
    out = sinusoidal(values, 8)
    for i, v in enumerate(values.tolist()):
        for k in range(4):
            w = 10_000 ** (-k / 4)
            assert out[i, k].item() == pytest.approx(math.cos(v * w), abs=1e-5)
            assert out[i, 4 + k].item() == pytest.approx(math.sin(v * w), abs=1e-5)
    with pytest.raises(ValueError, match="even"):
        sinusoidal(values, 7)


def test_sinusoidal_embedding_matches_diffusers():
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    t = torch.tensor([0, 1, 10, 500, 999])
    reference = embeddings.get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(sinusoidal(t.float(), 32), reference)


def test_noise_in_unit_interval_is_spread_over_distinct_embeddings():
    """t/T for neighbouring timesteps (1/1000 apart) must be told apart: the net scales noise by 1000."""
    torch.manual_seed(0)
    embed = ConditionEmbedding(16, 32, None)
    out = embed(torch.tensor([0.500, 0.501]), None)
    assert (out[0] - out[1]).abs().max() > 1e-3
