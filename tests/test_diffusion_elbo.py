"""The diffusion-elbo experiment: a smoke run writes its table, figure and a per-t profile that sums to the bound;
the rule and the bands on hand-made numbers; and (slow) the README's verdict at the CPU default."""

import json
import math
from pathlib import Path

import pytest
import torch
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.experiments import diffusion_elbo as de


def test_diffusion_elbo_smoke_scores_every_arm(tmp_path, monkeypatch):
    monkeypatch.setattr(de, "TEST_N", 8)
    small = ("model.net_options.channels=8", "model.net_options.head_dim=8", "model.steps=20")  # T = 20 levels
    monkeypatch.setattr(de, "CPU_UNET", small)
    args = ["experiment", "diffusion-elbo", "--run-dir", str(tmp_path), "--steps", "1", "--no-progress"]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["summary"]) == set(de.ARMS)
    for label in (de.LINEAR, de.COSINE):
        s = results["summary"][label]
        assert len(s["profile"]) == 20
        assert sum(s["profile"]) + s["prior_bits_per_dim"] == pytest.approx(s["bits_per_dim"], rel=1e-6)
        assert sum(s["shares"].values()) == pytest.approx(1.0)
        assert s["bits_per_dim"] == pytest.approx(s["nats"] / (64 * math.log(2)))
    assert results["verdict"] in {"holds", "fails", "undecided at this budget"}
    assert f"Verdict: **{results['verdict']}**" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "profile.png").is_file() and (tmp_path / "report.html").is_file()


def test_shares_split_the_bound_by_band_of_t():
    profile = [1.0] + [0.0] * 9 + [0.5] * 90 + [0.0] * 900  # t = 1, then t = 11 … 100
    shares = de.shares(profile, prior=1.0)
    assert shares == pytest.approx(
        {"t = 1": 1 / 47, "t 2–10": 0.0, "t 11–100": 45 / 47, "t 101–900": 0.0, "t 901–1000": 0.0, "L_T": 1 / 47}
    )


@pytest.mark.parametrize(
    ("flow", "ddpm", "verdict"),
    [
        (2.0, 2.4, "holds"),
        (2.0, 1.5, "holds"),
        (2.0, 3.0, "undecided at this budget"),
        (2.0, 4.1, "fails"),
        (1.0, 2.1, "fails"),
    ],
)
def test_rule_compares_the_ddpm_bound_with_the_flow_and_the_uniform_control(flow, ddpm, verdict):
    summary = {de.FLOW: {"bits_per_dim": flow}, de.LINEAR: {"bits_per_dim": ddpm}}
    assert de.decide(summary)["verdict"] == verdict


def test_readme_verdict_is_the_stored_runs():
    """README quotes the run kept in docs/results (its table there is checked verbatim by test_gan_claims)."""
    stored = json.loads((Path(__file__).parents[1] / "docs/results/diffusion-elbo.json").read_text())
    assert (
        readme_verdict("Diffusion ELBO vs a flow's NLL") == stored["verdict"] == de.decide(stored["summary"])["verdict"]
    )


@pytest.mark.slow
def test_readme_verdict_reruns(tmp_path):
    """The CPU default (one seed) as the README quotes it."""
    assert main(["experiment", "diffusion-elbo", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == readme_verdict("Diffusion ELBO vs a flow's NLL")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_an_eps_error_costs_the_closed_form_weight_at_each_step(schedule):
    """What the README's reading of the profile rests on: with σ_t² = β_t, an error δ in ε̂ adds
    β_t / (2 α_t (1 − ᾱ_t)) · D δ² nats to L_{t−1} (Ho et al. 2020, Eq. 12's weight), 500 per unit at the cosine
    schedule's last step (β_T clipped to 0.999) and at most ~0.27 on the linear one."""
    from genbits.models.diffusion import DiscreteSchedule, elbo_terms

    ab = getattr(DiscreteSchedule, schedule)(1000).alpha_bar(torch.arange(1, 1001))
    x0 = torch.rand(3, 4, dtype=torch.float64) * 2 - 1

    def exact(delta):
        return lambda x, i: (x - ab[i].sqrt() * x0) / (1 - ab[i]).sqrt() + delta

    def terms(delta):
        return elbo_terms(exact(delta), x0, ab, generator=torch.Generator().manual_seed(0))

    clean, off = terms(0.0), terms(0.01)
    alpha = ab[1:] / ab[:-1]
    weight = (1 - alpha) / (2 * alpha * (1 - ab[1:]))
    extra = torch.stack([off[f"L_{i}"] - clean[f"L_{i}"] for i in range(1, 1000)], dim=1)  # (B, T − 1)
    torch.testing.assert_close(extra, (weight * 4 * 0.01**2).expand(3, -1), rtol=1e-6, atol=1e-12)
    assert weight.max() < 0.28 if schedule == "linear" else weight[-1] == pytest.approx(500, rel=0.01)
