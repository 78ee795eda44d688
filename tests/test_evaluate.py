"""Default evaluation: images through uniform dequantization, reported as a bound in nats and bits/dim."""

import math

import pytest
import torch

from genbits import load_config, load_run
from genbits.data.base import dequantize
from genbits.errors import ConfigError
from genbits.runs.evaluate import evaluate
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


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits-flow")
    overrides = ["data=digits", "train.steps=60", "train.batch_size=128", "train.sample_every=0"]
    train(load_config("flow-ring", overrides), path, progress=False)
    return load_run(path)


def test_sample_metrics_on_digits_with_a_cached_reference(digits_run, tmp_path, monkeypatch):
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path))
    result = evaluate(digits_run, n=200, metrics=["fid", "kid", "pr"])
    assert result["features"] == "digits" and result["samples"] == 200 and result["reference_n"] == 200
    assert result["fid"] > 0 and 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    cached = list((tmp_path / "reference").glob("digits-digits-200-*.safetensors"))
    assert len(cached) == 1
    cached[0].write_bytes(b"corrupt")  # a damaged cache is recomputed, never trusted
    with pytest.warns(UserWarning, match="unreadable reference cache"):
        again = evaluate(digits_run, n=200, metrics=["fid", "kid", "pr"])
    assert again == result


def test_fid_of_the_test_split_against_itself_is_zero(digits_run, tmp_path, monkeypatch):
    """The reference pipeline and the sample pipeline are the same function: real data as 'samples' gives FID 0."""
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path))
    from genbits.metrics import fid
    from genbits.metrics.extractors import extractor
    from genbits.runs.evaluate import reference_features, test_batch

    features = extractor("digits")
    real = reference_features(digits_run, features, 297)
    assert fid(real, features(test_batch(digits_run, 297))) == pytest.approx(0.0, abs=1e-4)  # Tr Σ ≈ 1e3


def test_unknown_metric_and_missing_capability_are_config_errors(digits_run):
    with pytest.raises(ConfigError, match="fdi unknown; choose from nll, fid"):
        evaluate(digits_run, metrics=["fdi"])
    with pytest.raises(ConfigError, match="'modes' needs a mixture"):
        evaluate(digits_run, n=10, metrics=["modes"])


def test_ring_flow_gets_mode_coverage_and_raw_fid(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    train(load_config("flow-ring", ["train.steps=200", "train.sample_every=0"]), tmp_path / "run", progress=False)
    result = evaluate(load_run(tmp_path / "run"), n=2000, metrics=["nll", "modes", "fid"])
    assert result["features"] == "raw" and result["fid"] < 0.5
    assert result["modes"]["modes_captured"] >= 6 and len(result["modes"]["counts"]) == 9
