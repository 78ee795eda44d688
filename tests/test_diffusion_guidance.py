"""The diffusion-guidance experiment: its decision rules on hand-made scores, an end-to-end smoke run on the digits
(both kinds of guidance), and (slow) the CPU default, whose verdict must be the one README states."""

from __future__ import annotations

import json

import pytest
import torch
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.experiments import diffusion_guidance
from genbits.experiments.diffusion_guidance import decide, first_above, overall

SECTION = "Guidance on a diffusion model"

TINY = """
data: {name: digits}
model: {name: diffusion, net: unet, net_options: {channels: 8, multipliers: [1], head_dim: 8}, steps: 50,
        conditional: true}
objective: {name: denoising, p_uncond: 0.2}
train: {steps: 2, batch_size: 16, threads: 1, ema_decay: 0.0, checkpoint_every: 2}
"""
TINY_CLASSIFIER = """
data: {name: digits}
model: {name: noisy-classifier, channels: 8, multipliers: [1], head_dim: 8, steps: 50}
objective: {name: noisy-classification}
train: {steps: 2, batch_size: 16, threads: 1, checkpoint_every: 2}
"""


def scores(accuracy: float, recall: float) -> dict[str, float]:
    return {"accuracy": accuracy, "recall": recall, "precision": 0.5, "fid": 1.0, "intra_fid": 1.0}


@pytest.mark.parametrize(
    ("last", "verdict"),
    [
        (scores(0.80, 0.40), "holds"),
        (scores(0.60, 0.40), "fails"),  # accuracy did not rise
        (scores(0.80, 0.55), "fails"),  # recall did not fall
        (scores(0.63, 0.40), "undecided at this budget"),  # rose, but less than RISE
    ],
)
def test_the_rule_reads_the_first_and_largest_scale(last, verdict):
    measured = {0.0: scores(0.60, 0.50), 1.0: scores(0.99, 0.0), 4.0: last}
    assert decide(measured)["verdict"] == verdict


def test_the_claim_needs_both_kinds_and_the_bar_is_the_first_scale_at_real_accuracy():
    assert overall({"classifier-free": "holds", "classifier": "holds"}) == "holds"
    assert overall({"classifier-free": "holds", "classifier": "undecided at this budget"}).startswith("undecided")
    assert overall({"classifier-free": "fails", "classifier": "undecided at this budget"}) == "fails"
    measured = {0.0: scores(0.6, 0.5), 1.0: scores(0.72, 0.45), 2.0: scores(0.69, 0.4), 4.0: scores(0.8, 0.3)}
    assert first_above(measured, 0.70) == 1.0 and first_above(measured, 0.9) is None


def test_guidance_sweep_runs_end_to_end_at_smoke_size(tmp_path, monkeypatch):
    config, classifier = tmp_path / "tiny.yaml", tmp_path / "classifier.yaml"
    config.write_text(TINY)
    classifier.write_text(TINY_CLASSIFIER)
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(diffusion_guidance, "PRESET", str(config))
    monkeypatch.setattr(diffusion_guidance, "CLASSIFIER_PRESET", str(classifier))
    monkeypatch.setattr(diffusion_guidance, "CLASSIFIER_STEPS", 2)
    monkeypatch.setattr(diffusion_guidance, "ARMS", {"classifier-free": (0.0, 2.0), "classifier": (0.0, 5.0)})
    monkeypatch.setattr(diffusion_guidance, "SAMPLING", {"sampler": "ddim", "steps": 3})
    monkeypatch.setattr(diffusion_guidance, "PER_CLASS", 4)
    monkeypatch.setattr(diffusion_guidance, "SHOWN", 2)
    threads = torch.get_num_threads()
    run_dir = tmp_path / "guidance"
    assert main(["experiment", "diffusion-guidance", "--run-dir", str(run_dir), "--no-progress"]) == 0
    torch.set_num_threads(threads)
    results = json.loads((run_dir / "results.json").read_text())
    free, guided = results["arms"]["classifier-free"], results["arms"]["classifier"]
    assert list(free["scales"]) == ["0.0", "2.0"] and list(guided["scales"]) == ["0.0", "5.0"]
    assert free["scales"]["0.0"] == guided["scales"]["0.0"]  # scale 0 is the same unguided samples
    assert set(guided["scales"]["5.0"]) == {"accuracy", "precision", "recall", "fid", "intra_fid"}
    assert guided["scales"]["5.0"] != free["scales"]["0.0"]
    assert results["verdict"] == overall({"classifier-free": free["verdict"], "classifier": guided["verdict"]})
    assert (run_dir / "classifier" / "config.yaml").is_file()
    for name in ("table.md", "guidance.png", "samples.png", "report.html"):
        assert (run_dir / name).is_file(), name


@pytest.mark.slow
def test_cpu_default_verdict_is_the_one_readme_states(tmp_path):
    """Trains diffusion-fmnist14 and classifier-fmnist14 (minutes) and samples 8 settings × 300 images."""
    assert main(["experiment", "diffusion-guidance", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == readme_verdict(SECTION)


def test_readme_verdict_follows_the_rule_from_its_own_numbers():
    """The README's table (the unguided row and each kind's largest scale, CPU default) read by the rule gives the
    README's verdict."""
    unguided = scores(0.600, 0.855)
    verdicts = {
        "classifier-free": decide({0.0: unguided, 4.0: scores(0.860, 0.521)})["verdict"],
        "classifier": decide({0.0: unguided, 10.0: scores(0.727, 0.565)})["verdict"],
    }
    assert overall(verdicts) == readme_verdict(SECTION) == "holds"
