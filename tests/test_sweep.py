"""Sweeps: grid × seeds as independent runs, each with an outcome; resume; divergence as a result; Ray; the report."""

import json
import math
import sys

import pytest

from genbits.cli import main
from genbits.config import load_config
from genbits.errors import ConfigError, GenbitsError
from genbits.sweeps.sweep import OutcomeRules, judge, parse_grid, run_sweep

FAST = [
    "train.steps=30",
    "train.batch_size=128",
    "train.sample_every=0",
    "train.checkpoint_every=10",
    "train.log_every=5",
    "train.eval_samples=2000",
]
# on flow-ring in 30 steps: lr 1e-3 converges, 1.0 stalls (the loss rises from ~55 to ~68), 1e3 gives NaN at step 2
GRID = ["optim.lr=1e-3,1.0,1e3"]
EXPECTED = {"lr=1e-3": "converged", "lr=1.0": "stalled", "lr=1e3": "diverged"}


def sweep(path, grid=GRID, seeds=2, overrides=FAST, **options):
    return run_sweep("flow-ring", grid, path, seeds=seeds, overrides=overrides, progress=False, **options)


def status(run_dir):
    return json.loads((run_dir / "status.json").read_text())


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "lr"
    return path, sweep(path, workers=2)


def test_every_point_and_seed_is_a_run_with_an_outcome(lr_sweep):
    path, result = lr_sweep
    assert sorted(result.ran) == sorted(f"{point}/seed{s}" for point in EXPECTED for s in (0, 1))
    assert not result.skipped and not result.interrupted
    assert {row["run"]: row["status"]["outcome"] for row in result.runs} == {
        f"{point}/seed{s}": outcome for point, outcome in EXPECTED.items() for s in (0, 1)
    }
    config = load_config(path / "lr=1e-3" / "seed1" / "config.yaml")
    assert (config.optim.lr, config.train.seed) == (1e-3, 1)
    converged = status(path / "lr=1e-3" / "seed1")
    assert converged["metric"] == "test_nll" and math.isfinite(converged["final"]["test_nll"])
    assert converged["step"] == 30 and converged["wall_time"] > 0
    assert converged["final"]["loss"] < converged["initial_loss"]
    assert (path / "lr=1e-3" / "seed1" / "eval.json").exists()
    diverged = status(path / "lr=1e3" / "seed0")  # recorded as a result; the sweep went on
    assert "not finite" in diverged["reason"] and diverged["final"] == {} and diverged["metric"] is None
    summary = json.loads((path / "summary.json").read_text())
    assert summary["counts"] == {"converged": 2, "stalled": 2, "diverged": 2}


def test_report_renders_table_and_stability_plot(lr_sweep, capsys):
    path, _ = lr_sweep
    assert main(["report", str(path)]) == 0
    assert (path / "stability.png").read_bytes()[:4] == b"\x89PNG"
    page = (path / "report.html").read_text()
    assert "data:image/png;base64" in page and "final test_nll" in page
    assert all(name in page for name in ("lr=1e3/seed1", "diverged", "stalled", "converged"))


def test_a_different_sweep_in_the_same_directory_is_refused(lr_sweep):
    path, _ = lr_sweep
    with pytest.raises(ConfigError, match=r"changed: grid"):
        sweep(path, grid=["optim.lr=1e-3,1e-2"])
    with pytest.raises(ConfigError, match=r"changed: config\.train\.steps, seeds"):
        sweep(path, seeds=3, overrides=[*FAST, "train.steps=40"])


def test_rerun_skips_finished_runs_and_resumes_an_interrupted_one(lr_sweep):
    path, first = lr_sweep
    again = sweep(path)
    assert again.ran == [] and sorted(again.skipped) == sorted(first.ran)

    victim = path / "lr=1e-3" / "seed0"
    before = status(victim)
    others = {p: p.stat().st_mtime_ns for p in path.glob("*/seed*/status.json") if p.parent != victim}
    provenance = (victim / "provenance.json").stat().st_mtime_ns
    # as if killed after the step-20 checkpoint: no status, no final checkpoint
    (victim / "status.json").unlink()
    max((victim / "checkpoints").glob("step-*.safetensors")).unlink()

    resumed = sweep(path)
    assert resumed.ran == ["lr=1e-3/seed0"] and len(resumed.skipped) == 5
    after = status(victim)
    assert after["outcome"] == "converged" and after["step"] == 30
    assert after["final"]["loss"] == pytest.approx(before["final"]["loss"], rel=1e-5)  # as if never interrupted
    assert (victim / "provenance.json").stat().st_mtime_ns == provenance  # resumed, not started afresh
    steps = [json.loads(line)["step"] for line in (victim / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]
    assert {p: p.stat().st_mtime_ns for p in others} == others


def test_a_bad_grid_key_or_value_fails_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key"):
        sweep(tmp_path / "a", grid=["optim.lr=1e-3,1e-2", "optim.lrr=1,2"])
    with pytest.raises(ConfigError, match=r"--grid point lr=-1: optim\.lr: -1(\.0)? is out of range"):
        sweep(tmp_path / "b", grid=["optim.lr=1e-3,-1"])
    assert main(["sweep", "flow-ring", "--grid", "model.layerz=2,4", "--run-dir", str(tmp_path / "c")]) == 2
    assert "model.layerz" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_grid_values_split_at_top_level_commas():
    assert parse_grid(["model.hidden=[32,32],[64,64]", "optim.lr=1e-4, 1e-3"]) == {
        "model.hidden": ["[32,32]", "[64,64]"],
        "optim.lr": ["1e-4", "1e-3"],
    }
    for bad in (["optim.lr"], ["optim.lr=1,1"], ["train.seed=1,2"], ["optim.lr=1", "optim.lr=2"]):
        with pytest.raises(ConfigError, match="--grid"):
            parse_grid(bad)


@pytest.mark.parametrize(
    ("losses", "outcome"),
    [
        ([3.0, 1.0, 0.5], "converged"),
        ([3.0, 2.95, 2.9], "stalled"),  # fell by 0.1 < 0.05 × 3
        ([0.2, -0.5, -2.0], "converged"),  # an NLL crossing zero: judged against max(|L0|, 1) = 1
        ([0.2, 0.2, 0.17], "stalled"),  # fell by 0.03 < 0.05 × 1
        ([1.0, 5.0, 20.0], "diverged"),  # rose by 19 > 10 × 1
        ([1.0, 0.5, math.inf], "diverged"),
    ],
)
def test_outcome_rules(losses, outcome):
    assert judge(losses, OutcomeRules(tail=0.3))["outcome"] == outcome


def test_ray_executor_runs_the_same_jobs(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'genbits[ray]'")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        result = sweep(tmp_path / "ray", grid=["optim.lr=1e-3,3e-3"], seeds=1, executor="ray")
    finally:
        ray.shutdown()
    assert sorted(result.ran) == ["lr=1e-3/seed0", "lr=3e-3/seed0"]
    assert all(row["status"]["outcome"] == "converged" for row in result.runs)
    assert json.loads((tmp_path / "ray" / "sweep.json").read_text())["executor"] == "ray"


def test_ray_executor_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(GenbitsError, match=r"pip install 'genbits\[ray\]'"):
        sweep(tmp_path / "s", grid=["optim.lr=1e-3"], seeds=1, executor="ray")
    assert not (tmp_path / "s").exists()
