"""The divergence lab: grid quadrature against closed forms and scipy, the quadrature objective, the
forward/reverse-KL claim (fits through the training loop), a smoke run."""

import json
import math

import numpy as np
import ot
import pytest
import torch
from scipy import integrate, special, stats
from torch.distributions import MultivariateNormal, kl_divergence

from genbits import load_config
from genbits.data.toy2d import GaussianMixture, bimodal
from genbits.errors import ConfigError
from genbits.experiments import EXPERIMENTS
from genbits.experiments import divergences as lab
from genbits.objectives import quadrature as quad
from genbits.train.parts import build_parts

GRIDS = {dim: quad.Grid(*spec) for dim, spec in lab.GRIDS.items()}


def normal(mean: list[float], cov: list[list[float]]) -> MultivariateNormal:
    return MultivariateNormal(torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64))


def masses(grid: quad.Grid, density) -> torch.Tensor:
    return grid.log_masses(density.log_prob)


@pytest.mark.parametrize(
    ("dim", "p", "q"),
    [
        ("1-D", normal([0.3], [[0.64]]), normal([-0.5], [[1.69]])),
        ("2-D", normal([0.5, -0.3], [[1.0, 0.3], [0.3, 0.5]]), normal([-0.4, 0.2], [[0.7, -0.2], [-0.2, 0.6]])),
    ],
)
def test_kl_quadrature_matches_gaussian_closed_form(dim, p, q):
    log_p, log_q = masses(GRIDS[dim], p), masses(GRIDS[dim], q)
    assert quad.kl(log_p, log_q).item() == pytest.approx(kl_divergence(p, q).item(), abs=1e-5)
    assert quad.reverse_kl(log_p, log_q).item() == pytest.approx(kl_divergence(q, p).item(), abs=1e-5)


def expected_rbf(a: GaussianMixture, b: GaussianMixture, sigma: float) -> float:
    """E k(X, Y) for X ~ a, Y ~ b, k = exp(−‖x − y‖²/(2σ²)): an RBF smoothed by two Gaussians is a Gaussian."""
    s2 = sigma**2 + a.std**2 + b.std**2
    sq = torch.cdist(a.centres.double(), b.centres.double()).square()
    terms = (sigma**2 / s2) ** (a.centres.shape[1] / 2) * torch.exp(-sq / (2 * s2))
    return float(a.weights.double() @ terms @ b.weights.double())


def mmd2_closed_form(a: GaussianMixture, b: GaussianMixture) -> float:
    return sum(expected_rbf(a, a, s) + expected_rbf(b, b, s) - 2 * expected_rbf(a, b, s) for s in quad.BANDWIDTHS)


@pytest.mark.parametrize("dim", ["1-D", "2-D"])
def test_mmd_quadrature_matches_mixture_closed_form(dim):
    target = lab.targets()[dim]
    d = target.centres.shape[1]
    model = GaussianMixture(torch.tensor([[-0.6, 0.4], [1.5, -0.3]])[:, :d], 0.7, torch.tensor([0.4, 0.6]))
    grid = GRIDS[dim]
    value = quad.MMD(grid)(masses(grid, target), masses(grid, model)).item()
    assert value == pytest.approx(mmd2_closed_form(target, model), rel=1e-6)


def test_w1_cdf_matches_shift_and_scipy():
    grid = GRIDS["1-D"]
    w1 = quad.wasserstein1_cdf(masses(grid, normal([-0.7], [[0.36]])), masses(grid, normal([1.1], [[0.36]])), grid)
    assert w1.item() == pytest.approx(1.8, abs=1e-6)  # equal variances: W1 is the distance between the means
    log_p, log_q = masses(grid, lab.targets()["1-D"]), masses(grid, normal([0.4], [[2.0]]))
    nodes = grid.points[:, 0].numpy()
    reference = stats.wasserstein_distance(nodes, nodes, log_p.exp().numpy(), log_q.exp().numpy())
    assert quad.wasserstein1_cdf(log_p, log_q, grid).item() == pytest.approx(reference, rel=1e-9)


def test_w1_2d_ot_and_sliced_surrogate_on_translates():
    """For a translate, W1 = ‖shift‖ and the sliced W1 = E_θ|⟨shift, θ⟩| = (2/π)‖shift‖."""
    grid, cov = GRIDS["2-D"], [[0.36, 0.1], [0.1, 0.3]]
    log_p, log_q = masses(grid, normal([-0.5, -0.2], cov)), masses(grid, normal([0.7, 0.3], cov))
    shift = math.hypot(1.2, 0.5)
    assert lab.wasserstein1_ot(log_p, log_q, grid).item() == pytest.approx(shift, abs=5e-4)
    assert quad.SlicedWasserstein1(grid)(log_p, log_q).item() == pytest.approx(2 / math.pi * shift, rel=2e-3)


def test_w1_ot_moving_only_the_difference_equals_the_full_lp():
    """Kantorovich-Rubinstein: the LP between (P − Q)₊ and (P − Q)₋ has the value of the LP between P and Q."""
    grid = quad.Grid(((-4.0, 4.0), (-3.0, 3.0)), (20, 15))
    log_p, log_q = masses(grid, lab.targets()["2-D"]), masses(grid, normal([0.3, -0.2], [[1.5, 0.4], [0.4, 0.8]]))
    cost = torch.cdist(grid.points, grid.points).numpy()
    full = ot.emd2(log_p.exp().numpy(), log_q.exp().numpy(), cost)
    assert lab.wasserstein1_ot(log_p, log_q, grid).item() == pytest.approx(full, rel=1e-9)


def test_jsd_quadrature_matches_scipy_quad():
    target, model = lab.targets()["1-D"], stats.norm(0.5, 1.2)
    centres, weights = target.centres[:, 0].numpy(), target.weights.numpy()

    def integrand(x: float) -> float:
        lp = special.logsumexp(stats.norm.logpdf(x, centres, target.std), b=weights)
        lq = model.logpdf(x)
        lm = np.logaddexp(lp, lq) - math.log(2)
        return 0.5 * (math.exp(lp) * (lp - lm) + math.exp(lq) * (lq - lm))

    reference, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-12, limit=200)
    grid = GRIDS["1-D"]
    value = quad.jsd(masses(grid, target), masses(grid, normal([0.5], [[1.44]]))).item()
    assert value == pytest.approx(reference, abs=1e-6)


@pytest.fixture(scope="module")
def fitted_gaussian_1d(tmp_path_factory):
    """The lab's 1-D Gaussian fit under ``name`` from ``seed``: a run of the training loop."""
    run_dir = tmp_path_factory.mktemp("lab")

    def fitted(name: str, seed: int) -> lab.Gaussian:
        return lab.fit("Gaussian", "1-D", name, seed, lab.STEPS["Gaussian"], run_dir)[0]

    return fitted


def mean_and_std(model: lab.Gaussian) -> tuple[float, float]:
    params = lab.gaussian_parameters(model)
    return params["mean"][0], math.sqrt(params["cov"][0][0])


def test_forward_kl_covers_both_modes_reverse_kl_sits_on_one(fitted_gaussian_1d):
    """Modes at ∓2 with std 0.5 and weights 0.7/0.3. Forward KL = moment matching: mean −0.8, std √3.61 = 1.9;
    reverse KL: one mode's own mean and std (seed 0 starts nearer the light mode and stays there, seed 1 the heavy)."""
    target = lab.targets()["1-D"]
    centres, std = target.centres[:, 0].tolist(), target.std
    mean, scale = mean_and_std(fitted_gaussian_1d("forward KL", 0))
    assert min(centres) < mean < max(centres) and scale > 2 * std
    assert mean == pytest.approx(-0.8, abs=0.02) and scale == pytest.approx(1.9, abs=0.02)
    modes = set()
    for seed in (0, 1):
        mean, scale = mean_and_std(fitted_gaussian_1d("reverse KL", seed))
        distance, mode = min((abs(mean - c), c) for c in centres)
        assert distance < std and scale == pytest.approx(std, rel=0.1), (mean, scale)
        modes.add(mode)
    assert modes == set(centres)


def test_jsd_fit_covers_though_sitting_on_the_heavy_mode_scores_lower(fitted_gaussian_1d):
    """Gradient descent on JSD from a broad start finds a covering local minimum; the Gaussian on the 0.7 mode
    has a lower JSD (½(0.7 log(0.7/0.85) + 0.3 log 2) + ½ log(1/0.85) ≈ 0.117 < 0.2): JSD is mode-seeking at heart."""
    grid, target = GRIDS["1-D"], lab.targets()["1-D"]
    covering = fitted_gaussian_1d("JSD", 0)
    mean, scale = mean_and_std(covering)
    assert -1.0 < mean < -0.7 and scale > 1.5
    log_p = masses(grid, target)
    on_heavy_mode = quad.jsd(log_p, masses(grid, normal([-2.0], [[0.25]]))).item()
    assert on_heavy_mode == pytest.approx(0.117, abs=1e-3)
    assert on_heavy_mode < quad.jsd(log_p, grid.log_masses(covering.log_prob)).item() - 0.05


def test_the_quadrature_objective_is_the_divergence_of_the_grid_masses():
    """The registered objective = the divergence of the model's grid masses against the target's, batch ignored."""
    config = lab.fit_config("flow", "2-D", "W1", seed=0, steps=1)
    parts = build_parts(config)
    grid, target = GRIDS["2-D"], lab.targets()["2-D"]
    loss = parts.objective(parts.model, None).per_player["model"]
    direct = quad.SlicedWasserstein1(grid)(masses(grid, target), grid.log_masses(parts.model.log_prob))
    assert loss.dtype == torch.float64 and torch.equal(loss, direct)
    assert torch.equal(target.centres, bimodal().centres) and bimodal(dim=1).event_shape == (1,)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, r"objective \(quadrature\): limits: give 2 pair"),
        ({"limits": [[-7, 7], [4, -4]], "nodes": [64, 37]}, "low < high"),
        ({"limits": [[-7, 7], [-4, 4]], "nodes": [64]}, "nodes: give 2 count"),
        ({"limits": [[-7, 7], [-4, 4]], "nodes": [64, 37], "divergence": "tv"}, r"objective\.divergence: 'tv'"),
    ],
)
def test_the_quadrature_objective_refuses_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        build_parts(load_config({"data": "bimodal", "objective": {"name": "quadrature", **options}}))


def test_the_quadrature_objective_needs_a_known_density():
    with pytest.raises(ConfigError, match="known density"):
        build_parts(load_config({"data": "moons", "objective": {"name": "quadrature", "limits": [[-2, 3], [-2, 2]]}}))


def test_smoke_run_writes_figure_results_and_table(tmp_path):
    assert EXPERIMENTS["divergences"] is lab
    results = lab.run(tmp_path, seeds=1, steps=3, progress=False)
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert "| trained under" in (tmp_path / "table.md").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results["fits"]) == ["Gaussian, 1-D", "Gaussian, 2-D", "flow, 1-D", "flow, 2-D"]
    for block in results["fits"]:
        for name in lab.NAMES:
            scores = saved["fits"][block][name]["runs"][0]["eval"]
            assert set(lab.NAMES) <= set(scores) and all(math.isfinite(v) and v >= 0 for v in scores.values())
