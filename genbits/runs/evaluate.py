"""Evaluation of a run by what its model offers.

- ``nll``: held-out NLL for density models (and the truth's NLL on the same samples where the data density is
  known, so the gap is the KL from data to model; for images the uniform-dequantization bound on the discrete
  likelihood, also in bits/dim).
- ``elbo``: for latent-variable models, −ELBO on held-out data: an upper bound on the same NLL as ``nll`` (nats,
  bits/dim for images, the gap to the true NLL on toys), with the model's terms (``elbo_terms``: a diffusion model's
  L_T, L_t, L_0; a VAE's reconstruction and KL) averaged under ``elbo_terms``.
- ``fid``, ``kid``, ``pr``: sample quality on features of model samples vs held-out data (the test split, or fresh
  samples for the 2-D toys). The real side's features are cached, keyed by dataset, split, N and the extractor's
  fingerprint (weights hash + preprocessing).
- ``modes``: mode coverage of samples on mixtures with known centres (high-quality samples within 3 std
  of a centre, as in Srivastava et al. 2017's VEEGAN protocol).

What a model offers is asked of its contract (``genbits.models.base``: ``Density``, ``Generative``, ``Conditional``).
Sampling options (``how``: temperature, sampler, steps, …) change only the sample metrics: results of the default
sampling sit at the top level of eval.json, those of other options under ``sampling[<key>]``, so one checkpoint keeps
the results of every way it was sampled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from genbits.data import build_dataset
from genbits.data.base import Batch, SampledDataset, dequantize
from genbits.errors import ConfigError
from genbits.metrics.extractors import Extractor, extractor
from genbits.metrics.fid import fid, kid, precision_recall
from genbits.metrics.likelihood import bits_per_dim, dequantized_nll
from genbits.metrics.modes import mode_coverage
from genbits.models.base import (
    Conditional,
    Density,
    Generative,
    LatentVariable,
    balanced_labels,
    device_of,
    how_key,
    num_classes_of,
)
from genbits.runs import Run
from genbits.train.checkpoint import write_safetensors
from genbits.train.stream import seeded_generator

TEST_STREAM = 2**31 - 1  # a generator key no training batch uses
METRICS = ("nll", "fid", "kid", "pr", "modes", "elbo")
LIKELIHOOD_METRICS = ("nll", "elbo")
FEATURE_METRICS = ("fid", "kid", "pr")
DEFAULT_FEATURES = {"fashion-mnist": "fmnist", "digits": "digits"}


def test_data(run: Run, n: int) -> Batch:
    """Held-out data with labels: fresh samples (fixed seed, disjoint stream) for toys, the test split for finite
    datasets."""
    if isinstance(run.dataset, SampledDataset):
        return run.dataset.sample(n, seeded_generator(run.config.train.seed, TEST_STREAM))
    test = build_dataset(run.config.data.name, run.config.data.options, split="test", seed=run.config.train.seed)
    return test.get(torch.arange(min(n, len(test))))


def test_batch(run: Run, n: int) -> torch.Tensor:
    """Held-out data points (see :func:`test_data`)."""
    return test_data(run, n).x


def default_metrics(run: Run) -> list[str]:
    """NLL for density models, sample metrics for the rest (and the ELBO for latent-variable models); mode
    coverage wherever the modes are known."""
    metrics = ["nll"] if isinstance(run.model, Density) else list(FEATURE_METRICS)
    if isinstance(run.model, LatentVariable):
        metrics.append("elbo")
    if run.dataset.centres is not None:
        metrics.append("modes")
    return metrics


def default_features(run: Run) -> str:
    """genbits' own classifier for its image datasets; the raw coordinates for low-dimensional data."""
    if run.dataset.levels is None:
        return "raw"
    if run.config.data.name in DEFAULT_FEATURES:
        return DEFAULT_FEATURES[run.config.data.name]
    raise ConfigError(f"--features: no default feature net for {run.config.data.name!r}; pass one (see --help)")


@torch.no_grad()
def likelihood_metrics(run: Run, n: int) -> dict[str, Any]:
    if not isinstance(run.model, Density):
        raise ConfigError(f"metrics: 'nll' needs a density model; {type(run.model).__name__} has no log_prob")
    x = test_batch(run, n)
    result: dict[str, Any] = {"n": len(x)}
    levels = run.dataset.levels
    if levels is not None:  # images: a bound on the discrete NLL through uniform dequantization
        x = dequantize(x, levels, seeded_generator(run.config.train.seed, TEST_STREAM, 1))
    nll = torch.cat([-run.model.log_prob(chunk) for chunk in x.split(4096)])
    if levels is not None:
        dims = x[0].numel()
        nll = dequantized_nll(nll, levels, dims)
        result["bits_per_dim"] = bits_per_dim(nll.mean().item(), dims)
    return result | summary(run, x, nll, "test_nll")


def summary(run: Run, x: Tensor, nll: Tensor, name: str, gap: str = "gap") -> dict[str, float]:
    """Mean and standard error of a per-example NLL (or bound); on data with a known density also the true NLL of
    the same points and the gap (≈ KL(p* ‖ p_θ) for an exact NLL, plus the bound's slack for a bound)."""
    result = {name: nll.mean().item(), f"{name}_stderr": (nll.std() / math.sqrt(len(nll))).item()}
    if run.dataset.has_log_prob:
        true_nll = -run.dataset.log_prob(x)
        result["true_nll"] = true_nll.mean().item()
        result[gap] = result[name] - result["true_nll"]
        result[f"{gap}_stderr"] = ((nll - true_nll).std() / math.sqrt(len(nll))).item()
    return result


@torch.no_grad()
def elbo_metrics(run: Run, n: int, chunk: int = 1000) -> dict[str, Any]:
    """−ELBO on held-out data, as the model defines it on the data as given (for images a bound on the discrete
    likelihood of the grey levels, like the dequantized NLL of ``nll``), seeded; and the mean of each term."""
    model = run.model
    if not isinstance(model, LatentVariable):
        raise ConfigError(f"metrics: 'elbo' needs a latent-variable model; {type(model).__name__} has no elbo")
    data = test_data(run, n).to(device_of(model))
    labels = data.y if isinstance(model, Conditional) else None
    bounds, terms = [], {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.config.train.seed)  # the bound's Monte Carlo noise: the same for every evaluation
        for index in torch.arange(len(data)).split(chunk):
            y = None if labels is None else labels[index]
            if hasattr(model, "elbo_terms"):
                parts = model.elbo_terms(data.x[index], y)
                for key, value in parts.items():
                    terms.setdefault(key, []).append(value)
                bounds.append(-sum(parts.values()))
            else:
                bounds.append(model.elbo(data.x[index], y))
    nelbo = -torch.cat(bounds).double().cpu()
    result: dict[str, Any] = {"elbo_n": len(nelbo)} | summary(run, data.x.cpu(), nelbo, "test_nelbo", "elbo_gap")
    if run.dataset.levels is not None:
        result["elbo_bits_per_dim"] = bits_per_dim(result["test_nelbo"], data.x[0].numel())
    if terms:
        result["elbo_terms"] = {key: torch.cat(values).mean().item() for key, values in terms.items()}
    return result


@torch.no_grad()
def model_samples(run: Run, n: int, seed: int = 0, chunk: int = 1000, how: Mapping[str, Any] | None = None) -> Tensor:
    """n samples drawn with their own generator and the sampling options ``how``; images are clipped to the data
    range [0, 1]. A conditional model gets balanced labels (every class n/K times, ±1), like held-out data."""
    generator = torch.Generator().manual_seed(seed)
    classes = num_classes_of(run.model)
    labels = None if classes is None else balanced_labels(n, classes, device_of(run.model))
    chunks = torch.arange(n).split(chunk)
    samples = torch.cat(
        [
            run.model.sample(len(c), None if labels is None else labels[c], generator=generator, **(how or {}))
            for c in chunks
        ]
    )
    return samples.clamp(0, 1) if run.dataset.levels is not None else samples


def cache_dir() -> Path:
    """``$GENBITS_CACHE`` or ``~/.cache/genbits``: where reference features live."""
    return Path(os.environ.get("GENBITS_CACHE", Path.home() / ".cache" / "genbits")) / "reference"


def reference_features(run: Run, features: Extractor, n: int, progress: bool = False) -> Tensor:
    """Features of n held-out data points, computed once per (dataset, split, N, seed for toys, extractor)."""
    sampled = isinstance(run.dataset, SampledDataset)
    key = {
        "data": {"name": run.config.data.name, "options": run.config.data.options},
        "split": "fresh samples" if sampled else "test",
        "n": n,
        "seed": run.config.train.seed if sampled else None,
        "extractor": features.fingerprint,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache_dir() / f"{run.config.data.name}-{features.name.replace(':', '.')}-{n}-{digest}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["features"]
        except Exception as e:  # a truncated or foreign file: recompute rather than trust it
            warnings.warn(f"ignoring unreadable reference cache {path}: {e}", stacklevel=2)
    result = features(test_batch(run, n), progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors({"features": result.contiguous()}, path, {"key": json.dumps(key, default=str)})
    return result


def sample_metrics(
    run: Run,
    metrics: list[str],
    features: str | Extractor | None,
    n: int,
    progress: bool = False,
    how: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """FID / KID / precision-recall / mode coverage of n model samples (seed 0, sampling options ``how``)."""
    if not isinstance(run.model, Generative):
        raise ConfigError(f"metrics: {', '.join(metrics)} need samples; {type(run.model).__name__} cannot sample")
    samples = model_samples(run, n, how=how)
    result: dict[str, Any] = {"samples": len(samples)}
    if "modes" in metrics:
        centres = run.dataset.centres
        if centres is None:
            raise ConfigError(f"metrics: 'modes' needs a mixture with known centres; {run.config.data.name} has none")
        result["modes"] = mode_coverage(samples, centres, run.dataset.std)
    wanted = [m for m in metrics if m in FEATURE_METRICS]
    if wanted:
        net = features if isinstance(features, Extractor) else extractor(features or default_features(run))
        real = reference_features(run, net, n, progress)
        fake = net(samples, progress=progress)
        result["features"], result["reference_n"] = net.name, len(real)
        if "fid" in wanted:
            result["fid"] = fid(real, fake)
        if "kid" in wanted:
            result["kid_mean"], result["kid_std"] = kid(real, fake, generator=torch.Generator().manual_seed(0))
        if "pr" in wanted:
            result["precision"], result["recall"] = precision_recall(real, fake)
    return result


def evaluate(
    run: Run,
    n: int | None = None,
    metrics: list[str] | None = None,
    features: str | Extractor | None = None,
    progress: bool = False,
    how: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics for ``run`` at its latest checkpoint (default: :func:`default_metrics`); the CLI writes eval.json.

    With sampling options ``how``, the sample metrics go under ``result["sampling"][how_key(how)]`` (with ``how``
    itself) and likelihood metrics stay at the top level: they do not sample, so they are the same for every ``how``.
    """
    n = n or run.config.train.eval_samples
    metrics = metrics or default_metrics(run)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"metrics: {', '.join(unknown)} unknown; choose from {', '.join(METRICS)}")
    sampled = [m for m in metrics if m not in LIKELIHOOD_METRICS]
    how = dict(how or {})
    if how and not sampled:
        raise ConfigError(
            f"metrics: {', '.join(metrics)} draw{'s' * (len(metrics) == 1)} no samples, so the sampling options "
            f"{how_key(how)} would change nothing; add a sample metric "
            f"({', '.join(m for m in METRICS if m not in LIKELIHOOD_METRICS)})"
        )
    # samples first: an option the model does not understand fails before any other work
    from_samples = sample_metrics(run, metrics, features, n, progress, how) if sampled else {}
    result: dict[str, Any] = {"step": run.step}
    if "nll" in metrics:
        result.update(likelihood_metrics(run, n))
    if "elbo" in metrics:
        result.update(elbo_metrics(run, n))
    if how:
        result["sampling"] = {how_key(how): {"how": how, **from_samples}}
    else:
        result.update(from_samples)
    return result


def write_eval(run: Run, result: dict[str, Any]) -> None:
    """Write eval.json: results of other metrics (and other sampling options) at the same step are kept."""
    path = run.path / "eval.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    if previous.get("step") != result["step"]:
        previous = {}
    sampling = dict(previous.get("sampling", {}))
    for key, entry in result.get("sampling", {}).items():
        sampling[key] = sampling.get(key, {}) | entry
    merged = previous | result
    if sampling:
        merged["sampling"] = sampling
    path.write_text(json.dumps(merged, indent=2))
