"""Training-dynamics diagnostics: power iteration against SVD, update ratios by hand, and no effect on training."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from genbits import load_config
from genbits.metrics.dynamics import Dynamics, matrix_view, power_iteration
from genbits.runs.plots import plot_dynamics
from genbits.train import checkpoint, train
from genbits.train.rundir import RunDir


@pytest.mark.parametrize("shape", [(5, 3), (16, 64), (8, 4, 3, 3)])
def test_power_iteration_matches_the_largest_singular_value(shape):
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)), dtype=torch.float64)
    matrix = matrix_view(weight)
    u = torch.nn.functional.normalize(torch.ones(matrix.shape[0], dtype=torch.float64), dim=0)
    sigma, _ = power_iteration(matrix, u, 200)
    assert sigma == pytest.approx(torch.linalg.matrix_norm(matrix, ord=2).item(), rel=1e-6)


def test_gradient_norms_and_update_ratios_of_a_plain_sgd_step():
    """SGD without momentum moves θ by lr·g, so ‖Δθ‖/‖θ‖ = lr‖g‖/‖θ‖ for each parameter."""
    layer = nn.Linear(4, 3)
    dynamics = Dynamics({"model": layer})
    dynamics.active = True
    grads = [torch.randn_like(p) for p in layer.parameters()]
    norms_before = [p.detach().norm().item() for p in layer.parameters()]
    before = dynamics.observe_gradients("model", grads)
    lr = 0.1
    with torch.no_grad():
        for p, g in zip(layer.parameters(), grads, strict=True):
            p -= lr * g
    dynamics.observe_update("model", before)
    record = dynamics.collect()
    assert record["grad_norm/model"] == pytest.approx(math.sqrt(sum(g.norm().item() ** 2 for g in grads)), rel=1e-6)
    for (name, _), g, norm in zip(layer.named_parameters(), grads, norms_before, strict=True):
        assert record[f"grad_norm/model/{name}"] == pytest.approx(g.norm().item(), rel=1e-6)
        assert record[f"update_ratio/model/{name}"] == pytest.approx(lr * g.norm().item() / norm, rel=1e-5)
    assert record["spectral_norm/model/weight"] == pytest.approx(
        torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item(), rel=1e-4
    )
    assert not dynamics.active and dynamics.collect().keys() == {"spectral_norm/model/weight"}


def test_inactive_steps_record_nothing():
    layer = nn.Linear(2, 2)
    dynamics = Dynamics({"model": layer})
    assert dynamics.observe_gradients("model", [torch.ones(2, 2), torch.ones(2)]) is None
    assert dynamics.record == {}


def run(path: Path, diagnostics: bool) -> dict:
    overrides = ["train.steps=20", "train.log_every=5", "train.sample_every=0", "train.batch_size=64"]
    train(load_config("flow-ring", [*overrides, f"train.diagnostics={diagnostics}"]), path, progress=False)
    _, _, state = checkpoint.load_latest(path / "checkpoints")
    return state


def test_diagnostics_are_logged_plotted_and_do_not_change_training(tmp_path):
    with_diagnostics = run(tmp_path / "on", True)
    without = run(tmp_path / "off", False)
    for key, value in without["model"].items():
        assert torch.equal(value, with_diagnostics["model"][key]), key
    records = RunDir(tmp_path / "on").metrics()
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    last = records[-1]
    layer_norms = [v for k, v in last.items() if k.startswith("grad_norm/model/")]
    assert last["grad_norm/model"] == pytest.approx(math.sqrt(sum(v**2 for v in layer_norms)), rel=1e-5)
    assert all(last[k] > 0 for k in last if k.startswith("update_ratio/model/"))
    weights = {k: v for k, v in with_diagnostics["model"].items() if v.ndim >= 2}
    for name, weight in weights.items():
        sigma = torch.linalg.matrix_norm(matrix_view(weight.double()), ord=2).item()
        assert last[f"spectral_norm/model/{name}"] == pytest.approx(sigma, rel=1e-2), name
    assert not any(k.startswith("grad_norm") for r in RunDir(tmp_path / "off").metrics() for k in r)
    assert plot_dynamics(records, tmp_path / "dynamics.png") and (tmp_path / "dynamics.png").stat().st_size > 0
