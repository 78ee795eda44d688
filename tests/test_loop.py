"""The training loop's promises: bit-exact resume, extension, clean signals, refusals and NaN handling."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import assert_same_state, final_state

from genbits import load_config, load_run
from genbits.errors import CheckpointError, ConfigError, GenbitsError
from genbits.train import checkpoint, train
from genbits.train.rundir import RunDir

FAST = ["train.log_every=1", "train.sample_every=0", "train.batch_size=64"]


def config(*overrides, model="gaussian"):
    return load_config("flow-ring", [f"model.name={model}", *FAST, *overrides])


def metrics_without_time(run_dir):
    return [{k: v for k, v in r.items() if k != "time"} for r in RunDir(run_dir).metrics()]


def test_extending_a_run_is_bit_exact(tmp_path):
    """N steps, then extended to 2N in the same directory == 2N steps in one go (torch.equal on every tensor)."""
    train(config("train.steps=12", "train.checkpoint_every=5"), tmp_path / "split", progress=False)
    train(config("train.steps=24", "train.checkpoint_every=5"), tmp_path / "split", progress=False)
    train(config("train.steps=24", "train.checkpoint_every=5"), tmp_path / "whole", progress=False)
    assert_same_state(final_state(tmp_path / "split"), final_state(tmp_path / "whole"))
    assert metrics_without_time(tmp_path / "split") == metrics_without_time(tmp_path / "whole")


@pytest.mark.parametrize("model", ["gaussian", "flow"])
def test_resume_mid_run_is_bit_exact(tmp_path, model):
    """A run cut back to its step-10 checkpoint and resumed == the same run uninterrupted (LR schedule included)."""
    c = config(
        "train.steps=24",
        "train.checkpoint_every=5",
        "train.keep_checkpoints=10",
        "optim.schedule=cosine",
        "optim.warmup_steps=5",
        "optim.grad_clip=1",
        model=model,
    )
    train(c, tmp_path / "cut", progress=False)
    for path in checkpoint.list_checkpoints(tmp_path / "cut" / "checkpoints"):
        if int(path.name[5:14]) > 10:
            path.unlink()
    train(c, tmp_path / "cut", progress=False)
    train(c, tmp_path / "whole", progress=False)
    assert_same_state(final_state(tmp_path / "cut"), final_state(tmp_path / "whole"))
    assert metrics_without_time(tmp_path / "cut") == metrics_without_time(tmp_path / "whole")


def test_resume_from_an_earlier_checkpoint_truncates_metrics(tmp_path):
    run = tmp_path / "r"
    train(config("train.steps=10", "train.checkpoint_every=4", "train.keep_checkpoints=5"), run, progress=False)
    (run / "checkpoints" / "step-000000010.safetensors").unlink()  # as if killed after step 8's checkpoint
    result = train(
        config("train.steps=10", "train.checkpoint_every=4", "train.keep_checkpoints=5"), run, progress=False
    )
    steps = [r["step"] for r in RunDir(run).metrics()]
    assert result.step == 10 and steps == list(range(1, 11))


def test_changed_config_is_refused_with_the_keys(tmp_path):
    train(config("train.steps=3"), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"changed: optim\.lr, train\.seed"):
        train(config("train.steps=3", "optim.lr=0.5", "train.seed=3"), tmp_path, progress=False)


def test_corrupt_checkpoints(tmp_path):
    run = tmp_path / "r"
    train(config("train.steps=6", "train.checkpoint_every=3"), run, progress=False)
    newest = run / "checkpoints" / "step-000000006.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated: skipped with a warning
    with pytest.warns(UserWarning, match="skipping step-000000006"):
        path, step, _ = checkpoint.load_latest(run / "checkpoints")
    assert step == 3
    from safetensors.torch import save_file

    foreign = run / "checkpoints" / "step-000000009.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))  # a safetensors file, but not ours: refused
    with pytest.raises(CheckpointError, match="not a genbits checkpoint"):
        checkpoint.load_latest(run / "checkpoints")
    foreign.write_bytes(b"\x80\x04pickle")  # garbage: never unpickled
    with pytest.raises(CheckpointError):
        checkpoint.load(foreign)


def test_nan_stops_with_step_and_checkpoint(tmp_path):
    with pytest.raises(GenbitsError, match=r"step \d+: the loss of model is not finite.*step-000000000"):
        train(config("train.steps=200", "optim.optimizer=sgd", "optim.lr=1e4"), tmp_path, progress=False)


def test_nan_rollback_lowers_lr_and_finishes(tmp_path):
    result = train(
        config(
            "train.steps=60",
            "optim.optimizer=sgd",
            "optim.lr=1e4",
            "train.on_nan=rollback",
            "train.nan_lr_factor=1e-5",
            "train.checkpoint_every=10",
        ),
        tmp_path,
        progress=False,
    )
    records = RunDir(tmp_path).metrics()
    events = [r for r in records if r.get("event") == "rollback"]
    assert result.step == 60 and events and events[0]["lr_scale"] == pytest.approx(1e-5)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)


def test_training_reaches_the_best_gaussian_and_load_run_gives_ema_model(tmp_path):
    """A Gaussian fitted to the ring by maximum likelihood has Σ = (r²/2 + σ²)·I: NLL = log(2πe(r²/2 + σ²))."""
    train(config("train.steps=300", "optim.lr=0.05"), tmp_path, progress=False)
    records = RunDir(tmp_path).metrics()
    best = math.log(2 * math.pi * math.e * (2.0**2 / 2 + 0.02**2))
    assert records[0]["nll"] > best + 0.2
    assert abs(sum(r["nll"] for r in records[-20:]) / 20 - best) < 0.02
    run = load_run(tmp_path)
    raw = load_run(tmp_path, ema=False)
    assert run.step == 300 and not torch.equal(run.model.mean, raw.model.mean)
    assert run.config.train.steps == 300


def test_ema_decay_zero_is_the_live_model_without_a_copy_per_step(tmp_path):
    """EMA off (decay 0): sampling and evaluation see the live weights, and the average shares their storage, so
    no step spends time copying the model; the checkpoint still carries an "ema" entry (loadable as before)."""
    from genbits.train.ema import EMA

    model = torch.nn.Linear(3, 2)
    average = EMA(model, 0.0)
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(model)
    assert all(average.shadow[n].data_ptr() == p.data_ptr() for n, p in model.named_parameters())
    assert torch.equal(average.state_dict()["shadow"]["weight"], model.weight)
    train(config("train.steps=20", "train.ema_decay=0"), tmp_path, progress=False)
    assert torch.equal(load_run(tmp_path).model.mean, load_run(tmp_path, ema=False).model.mean)


def genbits_cmd(*args):
    return [sys.executable, "-m", "genbits", *args]


def test_sigterm_checkpoints_exits_cleanly_and_resumes_exactly(tmp_path):
    common = [
        "--set",
        "model.name=gaussian",
        "--set",
        "train.batch_size=64",
        "--set",
        "train.sample_every=0",
        "--set",
        "train.checkpoint_every=1000000",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        genbits_cmd("train", "flow-ring", "--set", "train.steps=1000000", *common, "--run-dir", str(tmp_path / "a")),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "a" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "checkpoint saved" in err
    stopped = checkpoint.list_checkpoints(tmp_path / "a" / "checkpoints")[-1]
    step = int(stopped.name[5:14])
    assert 0 < step < 1000000
    # resume to step + 7 and compare with an uninterrupted run of that length
    for run in ("a", "b"):
        done = subprocess.run(
            genbits_cmd(
                "train",
                "flow-ring",
                "--set",
                f"train.steps={step + 7}",
                *common,
                "--run-dir",
                str(tmp_path / run),
            ),
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    assert_same_state(final_state(tmp_path / "a"), final_state(tmp_path / "b"))


def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(tmp_path):
    """kill -9 (no handler runs, no final checkpoint) mid-training, resume from the last periodic checkpoint:
    every tensor of the final checkpoint — numpy's and Python's RNG states included — equals an uninterrupted run.
    Sample plots are on, so a lazily imported plotting stack after the resume is part of what is checked."""
    common = ["--set", "model.name=flow", "--set", "train.batch_size=64", "--set", "train.log_every=1"]
    common += ["--set", "train.sample_every=7", "--set", "train.checkpoint_every=5", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        genbits_cmd("train", "flow-ring", "--set", "train.steps=1000000", *common, "--run-dir", str(killed)),
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(checkpoint.list_checkpoints(killed / "checkpoints")) < 3:
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    step = int(checkpoint.list_checkpoints(killed / "checkpoints")[-1].name[5:14])
    assert step >= 10
    for run in (killed, tmp_path / "whole"):  # resume to step + 12 (past a checkpoint and a sample plot)
        args = genbits_cmd("train", "flow-ring", "--set", f"train.steps={step + 12}", *common, "--run-dir", str(run))
        done = subprocess.run(args, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert_same_state(final_state(killed), final_state(tmp_path / "whole"))
    assert metrics_without_time(killed) == metrics_without_time(tmp_path / "whole")


def test_finished_runs_are_not_rewritten(tmp_path):
    """An unchanged finished run trains nothing and says so; a lower train.steps is refused, nothing changes."""
    run = tmp_path / "r"
    train(config("train.steps=6", "train.checkpoint_every=3"), run, progress=False)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    again = train(config("train.steps=6", "train.checkpoint_every=3"), run, progress=False)
    assert again.already_finished and again.step == 6
    with pytest.raises(ConfigError, match=r"train\.steps=4: .* already trained 6 steps"):
        train(config("train.steps=4", "train.checkpoint_every=3"), run, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_cli_reports_errors_without_traceback(tmp_path):
    bad = subprocess.run(
        genbits_cmd("train", "flow-ring", "--set", "optim.lr=-1", "--run-dir", str(tmp_path)),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "optim.lr" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run(genbits_cmd("eval", str(tmp_path / "nowhere")), capture_output=True, text=True)
    assert missing.returncode == 1 and "not a genbits run directory" in missing.stderr


def test_checkpoint_flatten_round_trip():
    state = {"a": [1, 2.5, None, "x", True], 3: {"t": torch.arange(4)}, "nested": {"u": [torch.ones(2, 2)]}}
    tensors = {}
    skeleton = checkpoint.flatten(state, tensors)
    back = checkpoint.unflatten(json.loads(json.dumps(skeleton)), tensors)
    assert back["a"] == state["a"] and 3 in back and torch.equal(back[3]["t"], state[3]["t"])
    assert torch.equal(back["nested"]["u"][0], torch.ones(2, 2))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, precision):
    train(config("train.steps=40", "optim.lr=0.05", f"train.precision={precision}"), tmp_path, progress=False)
    records = RunDir(tmp_path).metrics()
    assert records[-1]["nll"] < records[0]["nll"] - 0.1


def test_fp64_trains_in_float64_and_null_sample_every_plots_nothing(tmp_path):
    """A flow's float64 layers would refuse float32 batches: training at all shows the batches are float64 too."""
    train(
        config("train.steps=5", "train.precision=fp64", "train.sample_every=null", model="flow"),
        tmp_path,
        progress=False,
    )
    floats = [t for t in final_state(tmp_path)["model"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float64 for t in floats)
    assert next(load_run(tmp_path).model.parameters()).dtype == torch.float64
    assert list((tmp_path / "samples").iterdir()) == []
