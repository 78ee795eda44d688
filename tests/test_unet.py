"""The UNet: any even image size (odd intermediate sizes included), conditioning in every block, gradients to every
parameter, and the same function as diffusers' UNet2DModel of the same architecture given the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genbits.nn.activations import ACTIVATIONS
from genbits.nn.norms import Norm
from genbits.nn.unet import UNet


def fixed_groups(groups: int) -> Norm:
    """GroupNorm with one group count at every width, as diffusers' ``norm_num_groups``."""
    return Norm(activation=lambda channels, spatial: nn.GroupNorm(groups, channels))


@pytest.mark.parametrize(
    ("size", "multipliers", "attention"),
    [(8, (1, 2), (4,)), (14, (1, 2, 2), (7,)), (28, (1, 1, 2, 2), (7, 4)), (32, (1, 2), (16,))],
)
def test_every_even_size_comes_back_and_every_parameter_learns(size, multipliers, attention):
    """28 → 14 → 7 → 4 and back: the way up resizes to each skip connection's size."""
    torch.manual_seed(0)
    net = UNet(
        (1, size, size),
        channels=8,
        multipliers=multipliers,
        num_res_blocks=1,
        attention=attention,
        num_classes=3,
        head_dim=8,
        dropout=0.1,
    )
    x, noise, y = torch.randn(3, 1, size, size), torch.rand(3), torch.tensor([0, 2, 3])
    out = net(x, noise, y)
    assert out.shape == x.shape
    out.square().sum().backward()
    silent = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"no gradient reaches {silent}"


def conditioned_unet(**options) -> UNet:
    torch.manual_seed(0)
    return UNet(
        (1, 8, 8),
        channels=8,
        multipliers=(1, 2),
        num_res_blocks=1,
        attention=(4,),
        num_classes=3,
        head_dim=8,
        **options,
    ).eval()


@pytest.mark.parametrize(
    ("norm", "activation"), [("group", "silu"), ("batch", "relu"), ("spectral", "gelu"), ("none", "leaky-relu")]
)
def test_conditioning_and_null_class_under_every_norm(norm, activation):
    net = conditioned_unet(norm=Norm.named(norm), activation=ACTIVATIONS[activation])
    x, noise, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        base = net(x, noise, y)
        assert not torch.allclose(base, net(x, noise, (y + 1) % 3))
        assert not torch.allclose(base, net(x, noise + 0.001, y))
        torch.testing.assert_close(net(x, noise, None), net(x, noise, torch.full((4,), 3)), rtol=0, atol=0)


def test_bad_architectures_are_refused_by_name():
    with pytest.raises(ValueError, match=r"attention at resolutions \[5\]: .* resolutions \[14, 7\]"):
        UNet((1, 14, 14), multipliers=(1, 2), attention=(5,))
    with pytest.raises(ValueError, match="images"):
        UNet((2,))
    with pytest.raises(ValueError, match="head_dim"):
        UNet((1, 8, 8), channels=12, multipliers=(1,), attention=(8,), head_dim=8)


def diffusers_twin(net: UNet, groups: int) -> nn.Module:
    """diffusers' UNet2DModel with ``net``'s architecture, carrying ``net``'s weights."""
    unet_2d = pytest.importorskip("diffusers").UNet2DModel
    twin = unet_2d(**net.diffusers_config(groups)).eval()
    ours = net.state_dict()
    names = {
        "conv_in": "input",
        "time_embedding.linear_1": "embed.noise.mlp.0",
        "time_embedding.linear_2": "embed.noise.mlp.2",
        "class_embedding": "embed.classes.table",
        "conv_norm_out": "output.0",
        "conv_out": "output.2",
        "down_blocks": "down",
        "up_blocks": "up",
        "mid_block.resnets.0": "middle.0",
        "mid_block.attentions.0": "middle.1",
        "mid_block.resnets.1": "middle.2",
        "resnets": "blocks",
        "downsamplers.0": "resample",
        "upsamplers.0": "resample",
        "conv1": "layer1",
        "conv2": "layer2",
        "time_emb_proj": "condition.1",
        "conv_shortcut": "skip",
        "group_norm": "norm",
        "to_out.0": "out",
    }
    state = {}
    for key in twin.state_dict():
        mine = key
        for theirs, our in names.items():
            mine = mine.replace(theirs, our)
        split = [i for i, p in enumerate(("to_q", "to_k", "to_v")) if p in mine]
        if split:  # diffusers' three projections are our fused qkv's thirds
            state[key] = ours[mine.replace(("to_q", "to_k", "to_v")[split[0]], "qkv")].chunk(3)[split[0]]
        else:
            state[key] = ours.pop(mine)
    leftover = [k for k in ours if ".qkv." not in k]
    assert not leftover, f"parameters diffusers does not have: {leftover}"
    twin.load_state_dict(state)
    return twin


@pytest.mark.parametrize(
    ("size", "multipliers", "attention", "classes"),
    [(28, (1, 2, 2), (7,), 10), (8, (1, 2), (8, 4), None)],
)
def test_same_parameters_and_same_function_as_diffusers(size, multipliers, attention, classes):
    """Our blocks are laid out as diffusers' (scale-shift ResNet blocks, attention, stride-2 down, nearest up): same
    parameter count, and with the same weights the same output, ours given noise = t/1000, theirs t."""
    torch.manual_seed(0)
    net = UNet(
        (1, size, size),
        channels=16,
        multipliers=multipliers,
        num_res_blocks=2,
        attention=attention,
        num_classes=classes,
        norm=fixed_groups(8),
        head_dim=8,
    ).eval()
    twin = diffusers_twin(net, groups=8)
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in net.parameters())
    x, t = torch.randn(2, 1, size, size), torch.tensor([10, 700])
    y = None if classes is None else torch.tensor([3, classes])
    with torch.no_grad():
        theirs = twin(x, t, class_labels=y).sample
        torch.testing.assert_close(net(x, t / 1000, y), theirs, rtol=1e-4, atol=1e-4)
