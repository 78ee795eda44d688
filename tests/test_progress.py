"""Objectives that see training progress: the ramp against hand values, the loop telling every evaluation of a step
the same (step, total), and a run whose loss weight ramps resuming bit for bit."""

import pytest
import torch
from helpers import assert_same_state, final_state

from genbits import load_config
from genbits.objectives.base import FINISHED, Losses, Objective, Progress, ramp
from genbits.registry import OBJECTIVES
from genbits.train import checkpoint, train
from genbits.train.rundir import RunDir


def test_ramp_matches_hand_values():
    """0 until fraction `start`, linear to 1 at `end`, then 1; start == end is a jump."""
    assert Progress(30, 100).fraction == 0.3
    assert ramp(Progress(30, 100), 0.2, 0.6) == pytest.approx((0.3 - 0.2) / (0.6 - 0.2))  # 0.25
    assert ramp(Progress(59, 100), 0.2, 0.6) == pytest.approx(0.975)
    assert ramp(Progress(20, 100), 0.2, 0.6) == 0.0
    assert ramp(Progress(10, 100), 0.2, 0.6) == 0.0
    assert ramp(Progress(60, 100), 0.2, 0.6) == 1.0
    assert ramp(Progress(3, 8)) == 0.375  # the default spans the whole run
    assert ramp(Progress(0, 10), 0.0, 0.0) == 1.0  # no warm-up
    assert [ramp(Progress(k, 10), 0.5, 0.5) for k in (4, 5)] == [0.0, 1.0]
    assert ramp(FINISHED, 0.2, 0.6) == 1.0 and Objective.progress == FINISHED


@pytest.mark.parametrize(("args", "match"), [((Progress(1, 4), 0.6, 0.2), "start <= end"), ((FINISHED, -0.1), "0 <=")])
def test_ramp_refuses_bad_fractions(args, match):
    with pytest.raises(ValueError, match=match):
        ramp(*args)


@pytest.mark.parametrize(("step", "total"), [(-1, 4), (5, 4), (0, 0)])
def test_progress_refuses_impossible_values(step, total):
    with pytest.raises(ValueError, match="0 <= step <= total"):
        Progress(step, total)


class RampedLikelihood(Objective):
    """Maximum likelihood with a loss weight ramping from 0.1 to 1.1 over the middle half of training; logs the
    weight and the progress it saw, and appends every evaluation's progress to ``seen``."""

    def __init__(self, seen: list[Progress]):
        self.seen = seen

    def __call__(self, model, batch) -> Losses:
        self.seen.append(self.progress)
        weight = 0.1 + ramp(self.progress, 0.25, 0.75)
        nll = -model.log_prob(batch.x).mean()
        step, total = torch.tensor(float(self.progress.step)), torch.tensor(float(self.progress.total))
        return Losses({"model": weight * nll}, {"weight": torch.tensor(weight), "seen_step": step, "seen_total": total})


@pytest.fixture
def seen(monkeypatch) -> list[Progress]:
    """Registers ``ramped-likelihood`` for one test; the progress of every evaluation lands in the list."""
    calls: list[Progress] = []
    monkeypatch.setitem(OBJECTIVES._table, "ramped-likelihood", lambda: RampedLikelihood(calls))
    return calls


def config(*overrides: str):
    fast = ["objective=ramped-likelihood", "model.name=gaussian", "train.log_every=1", "train.sample_every=null"]
    return load_config("flow-ring", [*fast, "train.batch_size=32", "optim.optimizer=sgd", "optim.lr=0.05", *overrides])


def test_a_ramped_objective_resumes_bit_for_bit_and_sees_each_step(tmp_path, seen):
    """Cut back to step 8 of 20 and resumed == uninterrupted: every saved tensor and every logged value; the
    objective saw Progress(k, 20) on step k + 1 and its weight followed the ramp."""
    c = config("train.steps=20", "train.checkpoint_every=4", "train.keep_checkpoints=10")
    train(c, tmp_path / "cut", progress=False)
    for path in checkpoint.list_checkpoints(tmp_path / "cut" / "checkpoints"):
        if int(path.name[5:14]) > 8:
            path.unlink()
    seen.clear()
    train(c, tmp_path / "cut", progress=False)
    assert seen == [Progress(k, 20) for k in range(8, 20)]  # a resumed run picks up at the restored step
    train(c, tmp_path / "whole", progress=False)

    assert_same_state(final_state(tmp_path / "cut"), final_state(tmp_path / "whole"))
    records = [{k: v for k, v in r.items() if k != "time"} for r in RunDir(tmp_path / "whole").metrics()]
    assert records == [{k: v for k, v in r.items() if k != "time"} for r in RunDir(tmp_path / "cut").metrics()]
    assert [(r["seen_step"], r["seen_total"]) for r in records] == [(k, 20) for k in range(20)]
    assert [r["weight"] for r in records] == pytest.approx(
        [0.1 + min(1, max(0, (k / 20 - 0.25) / 0.5)) for k in range(20)]
    )


def test_every_evaluation_of_a_multi_stage_step_sees_the_same_progress(tmp_path, seen):
    """RK4 evaluates the objective 4 times per step; the data-dependent init before step 0 sees step 0."""
    train(config("train.steps=3", "optim.rule.name=ode", "optim.rule.method=rk4"), tmp_path, progress=False)
    assert seen == [Progress(0, 3)] + [Progress(k, 3) for k in range(3) for _ in range(4)]
