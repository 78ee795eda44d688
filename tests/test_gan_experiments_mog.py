"""Issue 4's game experiments: the Dirac-GAN's trajectories follow each rule's spectral radius, with the verdicts the
talk and the papers claim; the MoG experiment runs end to end and records its curves (smoke size)."""

import json

import pytest

from genbits.cli import main
from genbits.experiments import gan_mog, gan_mog_rk4_step
from genbits.experiments.placement import ON_CPU

# what the issue claims for each rule of the Dirac-GAN at h = 0.1
CLAIMS = {
    "simultaneous GD": "diverges",
    "alternating GD": "bounded",
    "RK4": "bounded",
    "RK4 + regularizer γ=0.07": "converges",
    "cancel interaction drift": "diverges",
    "alternating + cancel interaction": "converges",
    "interaction drift × −2": "converges",
}


def test_dirac_gan_trajectories_follow_the_spectral_radius(tmp_path):
    assert main(["experiment", "dirac-gan", "--run-dir", str(tmp_path), "--steps", "100", "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rules = results["rules"]
    assert {label: r["verdict"] for label, r in rules.items()} == CLAIMS
    for label, r in rules.items():
        assert r["agrees"], (label, r)
    rho = {label: r["predicted_rho"] for label, r in rules.items()}
    assert rho["simultaneous GD"] > 1.001 and 1 < rho["cancel interaction drift"] < 1 + 1e-6
    assert abs(rho["RK4"] - 1) < 1e-9 and rho["RK4 + regularizer γ=0.07"] < 0.999
    for name in ("figure.png", "table.md", "report.html"):
        assert (tmp_path / name).is_file()


def test_gan_mog_smoke(tmp_path, monkeypatch):
    """Every arm trains (the equal-compute Euler arm 4× as many steps at h/4), every checkpoint is scored, every
    claim is judged against its control, and the outputs are written (on the ring only: the grid runs the same
    code, and each run's scoring costs seconds)."""
    monkeypatch.setattr(gan_mog, "DATASETS", {"ring": "gan-ring"})
    assert (
        main(["experiment", "gan-mog", "--run-dir", str(tmp_path), "--steps", "2", "--seeds", "1", "--no-progress"])
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["steps"] == {"ring": 2}
    assert set(results["datasets"]) == {"ring"}
    for rules in results["datasets"].values():
        assert list(rules) == list(gan_mog.ARMS)
        for arm, r in rules.items():
            (run,) = r["runs"]
            assert run["diverged"] is None
            steps = 8 if arm == gan_mog.EULER_EQUAL else 2
            assert r["steps"] == steps and run["curve"][-1]["step"] == steps
            assert len(r["end"]) == len(r["best"]) == 1 and r["end"][0]["step"] == steps
    assert [(c["treatment"], c["control"]) for c in results["claims"]] == [
        (c.treatment, c.control) for c in gan_mog.COMPARISONS
    ]
    table = (tmp_path / "table.md").read_text()
    for claim in results["claims"]:
        assert f"{claim['claim']}. Verdict: **{claim['verdict']}**." in table
    for name in ("curves.png", "samples.png", "table.md", "report.html"):
        assert (tmp_path / name).is_file()


def test_equal_compute_arm_matches_rk4s_evaluations_and_horizon():
    """Euler at h/4 for 4× the steps: the same field evaluations (RK4: 4 a step) and the same horizon steps × h."""
    rk4 = gan_mog.config_for("gan-ring", gan_mog.ARMS[gan_mog.RK4], "ring", ON_CPU, 0, 100, False)
    euler = gan_mog.config_for("gan-ring", gan_mog.ARMS[gan_mog.EULER_EQUAL], "ring", ON_CPU, 0, 100, False)
    same_h = gan_mog.config_for("gan-ring", gan_mog.ARMS[gan_mog.EULER], "ring", ON_CPU, 0, 100, False)
    assert (
        rk4.optim.rule.options["method"],
        euler.optim.rule.options["method"],
        same_h.optim.rule.options["method"],
    ) == (
        "rk4",
        "euler",
        "euler",
    )
    assert 4 * rk4.train.steps == euler.train.steps and same_h.train.steps == rk4.train.steps
    assert rk4.train.steps * rk4.optim.lr == pytest.approx(euler.train.steps * euler.optim.lr)
    assert same_h.optim.lr == rk4.optim.lr


@pytest.mark.parametrize(
    ("treatment", "control", "verdict"),
    [
        ([8, 7, 8, 6, 8], [4, 7, 5, 6, 3], "holds"),  # median 8 vs 5, wins 3 of 5
        ([5, 5, 5, 0, 0], [4, 6, 6, 4, 4], "undecided at this budget"),  # median +1 but wins 1 of 5
        ([1, 1, 2, 0, 1], [8, 7, 8, 8, 6], "fails"),
        ([5, 5, 5], [5, 4, 6], "undecided at this budget"),  # equal medians
        ([3, 2, 9], [2, 3, 2], "holds"),  # +1, wins 2 of 3
        ([2, 3, 2], [3, 2, 9], "fails"),
    ],
)
def test_paired_verdict_reads_medians_and_seed_wins(treatment, control, verdict):
    assert gan_mog.paired_verdict(treatment, control) == verdict


def test_a_claim_holds_only_where_it_holds_on_every_dataset():
    assert gan_mog.overall(["holds", "holds"]) == "holds"
    assert gan_mog.overall(["fails", "fails"]) == "fails"
    assert gan_mog.overall(["holds", "fails"]) == "undecided at this budget"
    assert gan_mog.overall(["holds", "undecided at this budget"]) == "undecided at this budget"


@pytest.mark.slow  # every h is a spawned run; the choice rule has a fast test below
def test_rk4_step_sweep_chooses_by_its_rule(tmp_path, monkeypatch):
    """Every h trains the same steps on the ring; the choice is the rule's on the recorded modes, and the verdict
    compares it with gan-mog's RK4 step."""
    monkeypatch.setattr(gan_mog, "DATASETS", {"ring": "gan-ring"})
    monkeypatch.setattr(gan_mog_rk4_step, "STEPS_TRIED", (0.1, 0.3))
    args = ["experiment", "gan-mog-rk4-step", "--run-dir", str(tmp_path), "--steps", "2", "--seeds", "1"]
    assert main([*args, "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    ring = results["datasets"]["ring"]
    assert list(ring) == ["h=0.1", "h=0.3"] and {r["steps"] for r in ring.values()} == {2}
    key = {h: (ring[f"h={h:g}"]["end"][0]["modes"], ring[f"h={h:g}"]["end"][0]["high_quality"], -h) for h in (0.1, 0.3)}
    assert results["chosen"] == {"ring": max(key, key=key.get)}
    assert results["verdict"] == ("holds" if results["chosen"]["ring"] == gan_mog.RK4_STEP["ring"] else "fails")
    assert f"Verdict: **{results['verdict']}**" in (tmp_path / "table.md").read_text()


def test_rk4_step_choice_breaks_ties_by_quality_then_smaller_h(monkeypatch):
    monkeypatch.setattr(gan_mog_rk4_step, "STEPS_TRIED", (0.1, 0.2, 0.3))

    def arm(*points):
        return {"end": [{"modes": m, "high_quality": q} for m, q in points]}

    by_h = {"h=0.1": arm((6, 0.2), (7, 0.1)), "h=0.2": arm((7, 0.3), (6, 0.1)), "h=0.3": arm((8, 0.0), (4, 0.0))}
    assert gan_mog_rk4_step.choose(by_h) == 0.2  # 6.5 modes each; 0.2's median quality is higher
    by_h["h=0.2"] = by_h["h=0.1"]
    assert gan_mog_rk4_step.choose(by_h) == 0.1


def test_full_adds_odegans_own_mog_setting_at_its_own_size():
    """--full: the MoG-16 notebook's setting beside the (larger) ring and grid: its nets, batch, steps, and RK4 at
    h = 0.1 with each player integrated with the other frozen."""
    assert gan_mog.datasets(False) == gan_mog.DATASETS and gan_mog.datasets(True)["mog16"] == "gan-mog16"
    rk4 = gan_mog.config_for("gan-mog16", gan_mog.ARMS[gan_mog.RK4], "mog16", ON_CPU, 0, None, True)
    assert (rk4.model.options["width"], rk4.model.options["depth"], rk4.model.options["latent"]) == (25, 2, 32)
    assert (rk4.train.steps, rk4.train.batch_size, rk4.optim.lr) == (30000, 512, 0.1)
    assert rk4.optim.rule.options == {"method": "rk4", "regularizer": 0.07, "integration": "frozen-other"}
    ring = gan_mog.config_for("gan-ring", gan_mog.ARMS[gan_mog.RK4], "ring", ON_CPU, 0, None, True)
    assert (ring.train.steps, ring.model.options["width"]) == (gan_mog.FULL["steps"], 256)
