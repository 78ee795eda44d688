"""Default evaluation: images through uniform dequantization, reported as a bound in nats and bits/dim."""

import math

import pytest
import torch

from genbits import load_config, load_run
from genbits.data.base import dequantize
from genbits.evaluate import evaluate
from genbits.train import train


def test_dequantize_puts_level_k_in_its_own_cell():
    levels = 17
    k = torch.arange(levels, dtype=torch.float32).repeat(1000)
    y = dequantize(k / (levels - 1), levels, torch.Generator().manual_seed(0))
    assert torch.equal((y * levels).floor(), k)
    assert (y * levels - k).mean().item() == pytest.approx(0.5, abs=0.01)  # u ~ U[0, 1)


def test_flow_on_digits_beats_the_uniform_bound(tmp_path):
    """A flow trained on dequantized 8×8 digits must beat log2(17) bits/dim (a uniform density on the lattice)."""
    train(
        load_config("flow-ring", ["data=digits", "train.steps=150", "train.batch_size=128", "train.sample_every=0"]),
        tmp_path,
        progress=False,
    )
    result = evaluate(load_run(tmp_path))
    assert result["n"] == 297  # the digits test split
    assert math.isfinite(result["test_nll"])
    assert result["bits_per_dim"] == result["test_nll"] / (64 * math.log(2))
    assert result["bits_per_dim"] < math.log2(17) - 0.5
