"""torchrun with 2 CPU processes (gloo) equals one process with the same global batch."""

import os
import subprocess
import sys

import pytest
import torch

from genbits.train import checkpoint

ARGS = [
    "train",
    "flow-ring",
    "--set",
    "train.steps=15",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.sample_every=0",
    "--set",
    "train.checkpoint_every=15",
    "--no-progress",
]


@pytest.mark.parametrize("model", ["gaussian", "flow"])
def test_two_processes_match_one(tmp_path, model):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*ARGS, "--set", f"model.name={model}"]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "genbits",
            *args,
            "--run-dir",
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "genbits", *args, "--run-dir", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a = checkpoint.load_latest(tmp_path / "ddp" / "checkpoints")[2]["model"]
    b = checkpoint.load_latest(tmp_path / "one" / "checkpoints")[2]["model"]
    # same batches, same maths; only the order of floating-point sums differs (mean of two half-batch means)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a)
