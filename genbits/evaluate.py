"""Default evaluation of a run, by what its model offers: held-out NLL for density models (and the truth's NLL
on the same samples where the data density is known, so the gap is the KL from data to model; for images the
NLL is the uniform-dequantization bound on the discrete likelihood, also in bits/dim)."""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from genbits.data import build_dataset
from genbits.data.base import SampledDataset, dequantize
from genbits.metrics.likelihood import bits_per_dim, dequantized_nll
from genbits.run import Run
from genbits.train.stream import seeded_generator

TEST_STREAM = 2**31 - 1  # a generator key no training batch uses


def test_batch(run: Run, n: int) -> torch.Tensor:
    """Held-out data: fresh samples (fixed seed, disjoint stream) for toys, the test split for finite datasets."""
    if isinstance(run.dataset, SampledDataset):
        return run.dataset.sample(n, seeded_generator(run.config.train.seed, TEST_STREAM)).x
    test = build_dataset(run.config.data.name, run.config.data.options, split="test", seed=run.config.train.seed)
    return test.x[:n]


@torch.no_grad()
def evaluate(run: Run, n: int | None = None) -> dict[str, Any]:
    """Metrics for ``run`` at its latest checkpoint; written to ``eval.json`` by the CLI."""
    n = n or run.config.train.eval_samples
    result: dict[str, Any] = {"step": run.step}
    if hasattr(run.model, "log_prob"):
        x = test_batch(run, n)
        result["n"] = len(x)
        levels = getattr(run.dataset, "levels", None)
        if levels is not None:  # images: a bound on the discrete NLL through uniform dequantization
            x = dequantize(x, levels, seeded_generator(run.config.train.seed, TEST_STREAM, 1))
        nll = torch.cat([-run.model.log_prob(chunk) for chunk in x.split(4096)])
        if levels is not None:
            dims = x[0].numel()
            nll = dequantized_nll(nll, levels, dims)
            result["bits_per_dim"] = bits_per_dim(nll.mean().item(), dims)
        result["test_nll"] = nll.mean().item()
        result["test_nll_stderr"] = (nll.std() / math.sqrt(len(nll))).item()
        if getattr(run.dataset, "has_log_prob", False):
            true_nll = -run.dataset.log_prob(x)
            result["true_nll"] = true_nll.mean().item()
            result["gap"] = result["test_nll"] - result["true_nll"]  # ≈ KL(p* ‖ p_θ)
            result["gap_stderr"] = ((nll - true_nll).std() / math.sqrt(len(nll))).item()
    return result


def write_eval(run: Run, result: dict[str, Any]) -> None:
    (run.path / "eval.json").write_text(json.dumps(result, indent=2))
