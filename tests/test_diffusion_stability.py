"""The diffusion-stability experiment: a smoke sweep of both families scores and judges every run; the measures and
the rule on hand-made numbers; the two families' parameter counts match at both sizes; and (slow) the README's
verdict at the CPU default."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.config import load_config
from genbits.experiments import diffusion_stability as ds
from genbits.experiments import gan_images
from genbits.train.parts import build_parts


@pytest.fixture
def smoke(monkeypatch, tmp_path):
    """Both families on the 8×8 digits, 4 steps, 100 scored samples, one learning rate, one sweep worker."""
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gan_images, "CPU", gan_images.Size((), steps=4, eval_samples=100))
    monkeypatch.setattr(gan_images, "WORKERS", 1)
    monkeypatch.setattr(ds, "CPU_LEARNING_RATES", ("1e-2",))
    monkeypatch.setattr(ds, "GAN", replace(ds.GAN, overrides=("data=digits",)))
    digits = replace(
        ds.DIFFUSION, overrides=(*ds.DIFFUSION.overrides, "data=digits"), how={"sampler": "ddim", "steps": 2}
    )
    monkeypatch.setattr(ds, "DIFFUSION", digits)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_diffusion_stability_smoke_scores_both_families(smoke, tmp_path):
    args = ["experiment", "diffusion-stability", "--run-dir", str(tmp_path), "--seeds", "1", "--no-progress"]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for family in results["families"].values():
        runs = family["runs"]
        assert [r["lr"] for r in runs] == [1e-2]
        best = runs[0]["fid"]
        assert family["best_median_fid"] == pytest.approx(best)  # one seed: a point's median is its run's FID
        for r in runs:
            expected = r["fid"] <= ds.FACTOR * best and r["fid"] < ds.UNTRAINED * family["untrained_fid"]
            assert r["trains"] == expected
            assert [step for step, _ in r["curve"]] == [4]  # logged every 20 steps and at the end
        assert family["trained_fraction"] == runs[0]["trains"]
        assert family["fid_spread"] == 0.0  # one seed per point
    assert results["verdict"] == ds.decide(results["families"]["diffusion"], results["families"]["gan"])
    table = (tmp_path / "table.md").read_text()
    assert f"Rule (fixed before running): {results['rule']}. Verdict: **{results['verdict']}**." in table
    assert (tmp_path / "stability.png").is_file() and (tmp_path / "report.html").is_file()


def test_roughness_is_the_median_absolute_step_of_the_log_loss():
    losses = [1.0, math.e, 1.0, math.e**3]
    assert ds.roughness(losses) == pytest.approx(1.0)  # steps of 1, 1, 3
    assert ds.roughness([1.0, float("nan")]) is None
    assert ds.roughness([1.0]) is None


@pytest.mark.parametrize(
    ("diffusion", "gan", "verdict"),
    [
        ((0.9, 0.1), (0.5, 0.3), "holds"),
        ((0.7, 0.1), (0.5, 0.3), "undecided at this budget"),  # more train, but not by the margin
        ((0.9, 0.4), (0.5, 0.3), "undecided at this budget"),  # wider spread
        ((0.5, 0.3), (0.5, 0.3), "fails"),
        ((0.4, None), (0.6, 0.3), "fails"),  # no spread: every point had a diverged seed
    ],
)
def test_rule_needs_more_runs_that_train_and_a_narrower_spread(diffusion, gan, verdict):
    def family(fraction, spread):
        return {"trained_fraction": fraction, "fid_spread": spread}

    assert ds.decide(family(*diffusion), family(*gan)) == verdict


@pytest.mark.parametrize("full", [False, True])
def test_parameter_counts_match_within_a_factor_of_1_2(full):
    counts = []
    for family in ds.families(full):
        parts = build_parts(load_config(family.preset, list(family.overrides)))
        counts.append(sum(p.numel() for p in parts.model.parameters()))
    assert max(counts) / min(counts) < 1.2


def test_readme_verdict_is_the_stored_runs():
    """README quotes the run kept in docs/results (its table there is checked verbatim by test_gan_claims)."""
    stored = json.loads((Path(__file__).parents[1] / "docs/results/diffusion-stability.json").read_text())
    assert (
        readme_verdict("Diffusion vs GAN stability")
        == stored["verdict"]
        == ds.decide(stored["families"]["diffusion"], stored["families"]["gan"])
    )


@pytest.mark.slow
def test_readme_verdict_reruns(tmp_path):
    """The CPU default (3 seeds) as the README quotes it."""
    assert main(["experiment", "diffusion-stability", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == readme_verdict("Diffusion vs GAN stability")
