"""The VAE experiments: a smoke run of each (tiny steps and sample counts), the aggregate-posterior density against
a direct computation, and the verdict the README states against the rule in code on recorded numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.experiments import latent_families, vae_posterior_holes
from genbits.registry import MODELS


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(vae_posterior_holes, "CPU", ["data=digits", "data.binarize=true", "model.width=16"])
    monkeypatch.setattr(vae_posterior_holes, "AGGREGATE_N", 50)
    monkeypatch.setattr(vae_posterior_holes, "PRIOR_SAMPLES", 200)
    monkeypatch.setattr(vae_posterior_holes, "FID_MIN", 20)
    top_2d = [*vae_posterior_holes.TOP_2D, "model.scales=4"]  # 8 → 4 → 2 → 1
    monkeypatch.setattr(vae_posterior_holes, "HVAE_CPU", ("hvae-digits", top_2d))
    monkeypatch.setattr(vae_posterior_holes, "DIGITS", ["data=digits", "data.binarize=true", "model.width=16"])
    monkeypatch.setattr(vae_posterior_holes, "DIGITS_HVAE", ("hvae-digits", top_2d))


@pytest.mark.parametrize("digits", [False, True])
def test_posterior_holes_smoke_measures_every_variant(tiny, tmp_path, digits):
    name = "vae-posterior-holes-digits" if digits else "vae-posterior-holes"
    args = ["experiment", name, "--run-dir", str(tmp_path), "--seeds", "1", "--steps", "3"]
    assert main([*args, "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["data"] == ("digits" if digits else "fashion-mnist")
    assert set(results["runs"]) == {*vae_posterior_holes.VARIANTS, vae_posterior_holes.HVAE}
    for (seed,) in results["runs"].values():
        assert 0 <= seed["hole_mass_0.01"] <= seed["hole_mass_0.1"] <= 1
        assert seed["fid_n"] < 20 or seed["fid_holes"] >= 0 and seed["fid_covered"] >= 0
    assert results["verdict"] in ("holds", "fails", "undecided at this budget")
    assert (tmp_path / "figure.png").stat().st_size > 0 and "Verdict" in (tmp_path / "table.md").read_text()


def test_latent_families_smoke_scores_every_family(monkeypatch, tmp_path):
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(latent_families, "TEST_N", 20)
    monkeypatch.setattr(latent_families, "IMPORTANCE_SAMPLES", 10)
    args = ["experiment", "latent-families", "--run-dir", str(tmp_path), "--seeds", "1", "--steps", "2"]
    assert main([*args, "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["summary"]) == set(latent_families.FAMILIES)
    vae = results["summary"][latent_families.VAE]
    assert vae["bound_k1"] >= vae["bound_k5"] - 3 * vae["test_nll_stderr"]  # k = 5 is the tighter bound
    assert results["verdict"] in ("holds", "fails", "undecided at this budget")


@pytest.mark.parametrize("posterior", ["gaussian", "flow"])
def test_aggregate_posterior_is_the_mean_of_the_per_example_densities(posterior):
    """Against q(z | x_n) computed one example at a time: the Gaussian's density, or for the flow posterior the
    change of variables through the flow's inverse with an autograd Jacobian."""
    torch.manual_seed(0)
    dataset = type("Data", (), {"levels": None})()
    model = MODELS.build(
        "vae", {"latent": 2, "width": 8, "depth": 1, "posterior": posterior}, event_shape=(3,), dataset=dataset
    ).eval()
    if model.posterior_flow is not None:
        with torch.no_grad():
            for p in model.posterior_flow.parameters():
                p.add_(0.3 * torch.randn_like(p))
    x, z = torch.randn(5, 3), torch.randn(4, 2)
    loc, log_scale = model.posterior(x)
    expected = []
    for point in z:
        densities = []
        for n in range(len(x)):
            if model.posterior_flow is None:
                base, log_det = point, 0.0
            else:
                base = model.posterior_flow.inverse(point.unsqueeze(0))[0][0]
                jac = torch.autograd.functional.jacobian(
                    lambda v: model.posterior_flow.inverse(v.unsqueeze(0))[0][0], point
                )
                log_det = torch.linalg.slogdet(jac)[1]
            normal = torch.distributions.Normal(loc[n], log_scale[n].exp())
            densities.append(normal.log_prob(base).sum() + log_det)
        expected.append(torch.stack(densities).logsumexp(0) - math.log(len(x)))
    ours = vae_posterior_holes.log_aggregate_posterior(model, x, z)
    torch.testing.assert_close(ours, torch.stack(expected).detach(), rtol=1e-4, atol=1e-5)


def test_the_holes_rule_reads_the_medians():
    base = {"hole_mass_0.01": 0.01, "hole_mass_0.1": 0.1, "confidence_gap": 0.05}
    fewer = {"hole_mass_0.01": 0.0, "hole_mass_0.1": 0.03, "confidence_gap": 0.0}
    more = {**fewer, "hole_mass_0.1": 0.2}
    decide = vae_posterior_holes.decide
    assert decide({vae_posterior_holes.BASELINE: base, "a": fewer, "b": fewer})["verdict"] == "holds"
    assert decide({vae_posterior_holes.BASELINE: base, "a": fewer, "b": more})["verdict"].startswith("undecided")
    assert decide({vae_posterior_holes.BASELINE: base, "a": more})["verdict"] == "fails"
    assert decide({vae_posterior_holes.BASELINE: {**base, "confidence_gap": -0.1}, "a": fewer})["verdict"] == "fails"
    assert math.isclose(decide({vae_posterior_holes.BASELINE: base, "a": fewer})["baseline_hole_mass"], 0.1)


RECORDED = Path(__file__).parent.parent / "docs" / "results"


@pytest.mark.parametrize(
    ("section", "module", "recorded"),
    [
        ("VAE posterior holes", vae_posterior_holes, "vae-posterior-holes.json"),
        ("VAE posterior holes on digits", vae_posterior_holes, "vae-posterior-holes-digits.json"),
        ("Latent families: exact likelihood vs bounds", latent_families, "latent-families.json"),
    ],
)
def test_readme_verdict_is_the_rule_applied_to_the_recorded_run(section, module, recorded):
    """The CPU runs take tens of minutes, so the README's run is recorded (docs/results/*.json, written by the
    experiment) and the rule in code is re-applied to its numbers: README, record and code cannot drift apart."""
    results = json.loads((RECORDED / recorded).read_text())
    assert module.decide(results["summary"])["verdict"] == results["verdict"] == readme_verdict(section)
    assert results["rule"] == module.RULE
