"""The pixelcnn-guidance experiment: a one-step smoke run through `genbits experiment`, the decision rule on
hand-made medians, and (slow) the CPU default run whose verdict the README states."""

from __future__ import annotations

import json

import pytest
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.experiments import pixelcnn_guidance


def experiment(name: str, run_dir, *args: str) -> dict:
    assert main(["experiment", name, "--run-dir", str(run_dir), "--no-progress", *args]) == 0
    for written in ("table.md", "results.json", "report.html", "guidance.png", "samples.png"):
        assert (run_dir / written).is_file(), written
    return json.loads((run_dir / "results.json").read_text())


def test_smoke_scores_every_scale(monkeypatch, tmp_path):
    """A one-layer net, two steps, three samples per class: every scale is scored."""
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pixelcnn_guidance, "CPU", ("model.channels=4", "model.layers=1"))
    monkeypatch.setattr(pixelcnn_guidance, "PER_CLASS", 3)
    monkeypatch.setattr(pixelcnn_guidance, "SHOWN", 1)
    monkeypatch.setattr(pixelcnn_guidance, "SCALES", (0.0, 2.0))
    results = experiment("pixelcnn-guidance", tmp_path / "guidance", "--seeds", "1", "--steps", "2")
    (scores,) = results["runs"]
    assert [s["w"] for s in scores] == [0.0, 2.0]
    assert all(0 <= s["accuracy"] <= 1 and 0 <= s["recall"] <= 1 and s["fid"] > 0 for s in scores)
    assert results["verdict"] in ("holds", "fails", "undecided at this budget")
    assert results["real_test_accuracy"] == pytest.approx(0.966, abs=0.01)  # the shipped digits net's


@pytest.mark.parametrize(
    ("accuracy", "recall", "verdict"),
    [
        ([0.6, 0.7, 0.8], [0.5, 0.45, 0.4], "holds"),
        ([0.6, 0.62, 0.63], [0.5, 0.45, 0.4], "undecided at this budget"),
        ([0.6, 0.6, 0.6], [0.5, 0.45, 0.4], "fails"),
        ([0.6, 0.7, 0.8], [0.5, 0.55, 0.6], "fails"),
    ],
)
def test_the_rule_reads_the_largest_scale_against_no_guidance(accuracy, recall, verdict):
    assert pixelcnn_guidance.decide({"accuracy": accuracy, "recall": recall})["verdict"] == verdict


@pytest.mark.slow
def test_cpu_default_verdict_is_the_readme_one(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    results = experiment("pixelcnn-guidance", tmp_path / "guidance")
    assert results["verdict"] == readme_verdict("Classifier-free guidance on a PixelCNN")
