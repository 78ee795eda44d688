"""Issue 4's GAN image experiments: each runs end to end at smoke size (8×8 digits, a few steps, one seed, small
grids) and writes its figure, table and results; intra-class FID and accuracy on samples are checked on real data."""

import json

import pytest
import torch

from genbits.cli import main
from genbits.data import build_dataset
from genbits.experiments import gan_adam_beta1, gan_batch_size, gan_conditioning, gan_images, gan_spectral_norm
from genbits.experiments.gan_conditioning import intra_class_fid, sample_accuracy
from genbits.metrics.extractors import extractor, load_feature_net, shipped


@pytest.fixture
def smoke(monkeypatch, tmp_path):
    """The CPU size shrunk to digits, 4 steps and 100 scored samples, one sweep worker (each spawned worker imports
    torch: seconds); reference features cached in tmp_path; torch's thread count restored afterwards (the sweep
    sets the runs' one thread for this process)."""
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gan_images, "CPU", gan_images.Size(("data=digits",), steps=4, eval_samples=100))
    monkeypatch.setattr(gan_images, "WORKERS", 1)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def experiment(name: str, run_dir) -> dict:
    assert main(["experiment", name, "--run-dir", str(run_dir), "--seeds", "1", "--no-progress"]) == 0
    for table in ("table.md", "results.json", "report.html"):
        assert (run_dir / table).is_file(), table
    assert list(run_dir.glob("*.png"))
    return json.loads((run_dir / "results.json").read_text())


def test_spectral_norm_sweep_scores_and_rejudges_every_run(smoke, monkeypatch, tmp_path):
    monkeypatch.setattr(gan_spectral_norm, "LEARNING_RATES", ("1e-3",))
    monkeypatch.setattr(gan_spectral_norm, "NORMS", ("none", "spectral"))
    results = experiment("gan-spectral-norm", tmp_path / "sn")
    assert [(r["d_norm"], r["lr"]) for r in results["runs"]] == [("none", 1e-3), ("spectral", 1e-3)]
    best = min(r["fid"] for r in results["runs"])
    assert results["trained_fid_threshold"] == pytest.approx(gan_spectral_norm.TOLERANCE * best)
    assert {r["outcome"] for r in results["runs"]} <= {"converged", "stalled"}
    assert any(r["outcome"] == "converged" for r in results["runs"])  # the best run is within the tolerance
    assert (tmp_path / "sn" / "stability.png").is_file()
    assert "worst / best" in (tmp_path / "sn" / "table.md").read_text()  # the lr-sensitivity table


def test_adam_beta1_curves_have_one_point_per_checkpoint(smoke, monkeypatch, tmp_path):
    monkeypatch.setattr(gan_adam_beta1, "BETA1", (0.0, 0.9))
    results = experiment("gan-adam-beta1", tmp_path / "beta1")
    assert list(results["curves"]) == ["0", "0.9"]
    (curve,) = results["curves"]["0.9"]
    assert [point["step"] for point in curve] == [1, 2, 3, 4]
    assert set(results["final"]["0"]) == {"fid", "kid"} and results["final"]["0"]["fid"]["median"] > 0


def test_batch_size_runs_see_the_same_number_of_samples(smoke, monkeypatch, tmp_path):
    monkeypatch.setattr(gan_batch_size, "BATCH_SIZES", (32, 64))
    results = experiment("gan-batch-size", tmp_path / "batch")
    assert results["settings"]["samples"] == 4 * 64
    assert {batch: seed0["step"] for batch, (seed0,) in results["runs"].items()} == {"32": 8, "64": 4}
    assert set(results["final"]["32"]) == {"fid", "kid"}


def test_conditioning_reports_fid_intra_class_fid_and_accuracy(smoke, monkeypatch, tmp_path):
    monkeypatch.setattr(gan_conditioning, "PER_CLASS", 50)
    results = experiment("gan-conditioning", tmp_path / "cond")
    assert set(results["summary"]) == {"concat", "throughout"}
    (run,) = results["runs"]["throughout"]
    assert len(run["intra_fid_per_class"]) == 10 and len(run["accuracy_per_class"]) == 10
    assert 0 <= run["accuracy"] <= 1 and run["intra_fid"] > 0
    assert results["real_test_accuracy"] == pytest.approx(0.966, abs=0.01)


@pytest.fixture(scope="module")
def digits_test():
    return build_dataset("digits", {}, split="test")


def test_intra_class_fid_of_real_images_is_zero_and_sees_wrong_labels(digits_test):
    """Test images as 'samples' with their own labels: every class matches itself. With the labels shuffled the
    unconditional FID would still be 0, but each class is now compared with a mixture: far from 0."""
    features = extractor("digits")(digits_test.x)
    labels = digits_test.y
    assert intra_class_fid(features, labels, features, labels) == pytest.approx([0.0] * 10, abs=1e-3)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert min(intra_class_fid(features, labels, features, shuffled)) > 50


def test_accuracy_on_real_images_is_the_classifiers_test_accuracy(digits_test):
    classifier, metadata = load_feature_net(shipped()["digits"])
    assert sample_accuracy(classifier, digits_test.x, digits_test.y) == pytest.approx(metadata["test_accuracy"])
