"""The diffusion-guidance experiment: its decision rule on hand-made scores, an end-to-end smoke run on the digits,
and (slow) the CPU default, whose verdict must be the one README states."""

from __future__ import annotations

import json

import pytest
import torch
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.experiments import diffusion_guidance
from genbits.experiments.diffusion_guidance import decide

TINY = """
data: {name: digits}
model: {name: diffusion, net: unet, net_options: {channels: 8, multipliers: [1], head_dim: 8}, steps: 50,
        conditional: true}
objective: {name: denoising, p_uncond: 0.2}
train: {steps: 2, batch_size: 16, threads: 1, ema_decay: 0.0, checkpoint_every: 2}
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


def test_guidance_sweep_runs_end_to_end_at_smoke_size(tmp_path, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(diffusion_guidance, "PRESET", str(config))
    monkeypatch.setattr(diffusion_guidance, "SCALES", (0.0, 2.0))
    monkeypatch.setattr(diffusion_guidance, "SAMPLING", {"sampler": "ddim", "steps": 3})
    monkeypatch.setattr(diffusion_guidance, "PER_CLASS", 4)
    monkeypatch.setattr(diffusion_guidance, "SHOWN", 2)
    threads = torch.get_num_threads()
    run_dir = tmp_path / "guidance"
    assert main(["experiment", "diffusion-guidance", "--run-dir", str(run_dir), "--no-progress"]) == 0
    torch.set_num_threads(threads)
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["scales"]) == ["0.0", "2.0"]
    assert set(results["scales"]["2.0"]) == {"accuracy", "precision", "recall", "fid", "intra_fid"}
    assert results["verdict"] in ("holds", "fails", "undecided at this budget")
    for name in ("table.md", "guidance.png", "samples.png", "report.html"):
        assert (run_dir / name).is_file(), name


@pytest.mark.slow
def test_cpu_default_verdict_is_the_one_readme_states(tmp_path):
    """Trains diffusion-fmnist14 (minutes) and samples 5 scales × 1000 images."""
    assert main(["experiment", "diffusion-guidance", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == readme_verdict("Classifier-free guidance on a diffusion model")


def test_readme_verdict_follows_the_rule_from_its_own_numbers():
    """The README's table (w = 0 and w = 4 rows of the CPU default) read by the rule gives the README's verdict."""
    measured = {0.0: scores(0.597, 0.860), 4.0: scores(0.873, 0.561)}
    assert decide(measured)["verdict"] == readme_verdict("Classifier-free guidance on a diffusion model") == "holds"
