"""torchrun with 2 CPU processes (gloo) equals one process with the same global batch."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import final_state

from genbits import load_config
from genbits.data.toy2d import ring
from genbits.train import train
from genbits.train.stream import BatchStream

STEPS = ["--set", "train.steps=15", "--set", "train.sample_every=0", "--set", "train.checkpoint_every=15"]


def train_both(tmp_path, args: list[str]) -> tuple[dict, dict]:
    """The final model state of ``genbits train *args`` under torchrun with 2 processes, and in one process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for prefix, name in ((launch, "ddp"), ([sys.executable], "one")):
        done = subprocess.run(
            [*prefix, "-m", "genbits", "train", *args, "--no-progress", "--run-dir", str(tmp_path / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    return final_state(tmp_path / "ddp")["model"], final_state(tmp_path / "one")["model"]


def assert_close_and_trained(a: dict, b: dict) -> None:
    # same batches, same maths; only the order of floating-point sums differs (mean of two half-batch means)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a)


@pytest.mark.parametrize("model", ["gaussian", "flow"])
def test_two_processes_match_one(tmp_path, model):
    args = ["flow-ring", *STEPS, "--set", "train.batch_size=64", "--set", f"model.name={model}"]
    assert_close_and_trained(*train_both(tmp_path, args))


VAE_RUN = [
    "train.steps=15",
    "train.batch_size=64",
    "train.sample_every=0",
    "train.checkpoint_every=15",
    "model.width=32",
]


def train_shard(rank: int, world: int, init_file: str, run_dir: str) -> None:
    """One process of a gloo group training vae-ring (the loop joins the group already initialized here)."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    train(load_config("vae-ring", VAE_RUN), run_dir, progress=False)
    torch.distributed.destroy_process_group()


def test_a_vae_on_two_processes_matches_one(tmp_path):
    """The reparameterization noise is per example (the stream's ExampleNoise), so the shards draw what the whole
    batch draws: 2 × half a batch trains the VAE as 1 × the batch (spawned workers, not torchrun: fewer starts)."""
    torch.multiprocessing.spawn(train_shard, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2)
    train(load_config("vae-ring", VAE_RUN), tmp_path / "one", progress=False)
    assert_close_and_trained(final_state(tmp_path / "ddp")["model"], final_state(tmp_path / "one")["model"])


def test_example_noise_does_not_depend_on_the_split():
    """Two processes' shards, and micro-batches of a shard, draw exactly the rows the whole batch draws."""
    data = ring()
    whole = next(BatchStream(data, 8, seed=3)).noise.normal((2, 5), draw=1)
    halves = [next(BatchStream(data, 8, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert torch.equal(torch.cat([h.noise.normal((2, 5), draw=1) for h in halves]), whole)
    assert torch.equal(halves[1][1:3].noise.normal((2, 5), draw=1), whole[5:7])
    assert not torch.equal(halves[0].noise.normal((2, 5), draw=0), whole[:4])  # draws are independent
