"""Sample-quality metrics against independent references: scipy, brute-force loops and closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from genbits.metrics import (
    Statistics,
    bits_per_dim,
    dequantized_nll,
    fid,
    frechet_distance,
    kid,
    mmd2,
    mode_coverage,
    precision_recall,
    sliced_wasserstein,
    wasserstein1_1d,
    wasserstein_exact,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula with scipy's sqrtm of the non-symmetric Σ₁Σ₂."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def stats_of(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = Statistics.of(x)
    return s.mean, s.covariance


# --- FID -------------------------------------------------------------------------------------------------------


def test_statistics_match_numpy():
    x = torch.randn(300, 5, generator=gen()) * 3 + 1000  # a large mean must not cancel the covariance away
    s = Statistics.of(x, batch_size=7)
    np.testing.assert_allclose(s.mean.numpy(), x.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.covariance.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-9)
    assert s.n == 300


def test_frechet_distance_matches_scipy_sqrtm():
    x = torch.randn(400, 16, generator=gen(1), dtype=torch.float64) @ torch.randn(16, 16, generator=gen(2)).double()
    y = torch.randn(300, 16, generator=gen(3), dtype=torch.float64) + 0.3
    ours = frechet_distance(*stats_of(x), *stats_of(y))
    assert ours == pytest.approx(scipy_frechet(x.numpy(), y.numpy()), rel=1e-8)


def test_frechet_distance_rank_deficient_matches_full_rank_subspace():
    # Features on a 4-D subspace of R^32 (rank-deficient covariances, the many-features case where scipy's sqrtm of
    # the singular Σ₁Σ₂ is unreliable): the distance equals the one computed on the 4-D coordinates with scipy.
    basis, _ = torch.linalg.qr(torch.randn(32, 4, generator=gen(4), dtype=torch.float64))
    z1 = torch.randn(200, 4, generator=gen(5), dtype=torch.float64) * torch.tensor([1.0, 1e-3, 5.0, 0.1])
    z2 = torch.randn(250, 4, generator=gen(6), dtype=torch.float64) * 2 + 1
    ours = frechet_distance(*stats_of(z1 @ basis.T), *stats_of(z2 @ basis.T))
    assert ours == pytest.approx(scipy_frechet(z1.numpy(), z2.numpy()), rel=1e-6)
    # Fewer samples than features: the fitted covariance is singular, and the distance to itself is still 0.
    few = torch.randn(10, 32, generator=gen(7), dtype=torch.float64)
    assert abs(fid(few, few)) < 1e-10


def test_fid_of_identical_sets_is_zero():
    x = torch.randn(500, 8, generator=gen(8))
    assert abs(fid(x, x)) < 1e-10


def test_fid_does_not_depend_on_batch_size():
    x = torch.randn(1000, 12, generator=gen(9)) * 2 + 5
    y = torch.randn(900, 12, generator=gen(10)) + 5.5
    values = [fid(Statistics.of(x, b), Statistics.of(y, b)) for b in (7, 100, None)]
    assert max(values) - min(values) < 1e-10
    assert values[0] > 1


def test_fid_between_shifted_gaussians_is_the_squared_shift():
    m = torch.tensor([1.0, -2.0, 0.5, 0.0])
    x = torch.randn(20000, 4, generator=gen(11))
    y = torch.randn(20000, 4, generator=gen(12)) + m
    # ‖m + e‖² with e ~ N(0, 2I/N): the cross term 2mᵀe has std 2‖m‖√(2/N) ≈ 0.046; covariance noise adds
    # O(D²/N) ≈ 1e-3. Tolerance 0.15 ≈ 3σ.
    assert fid(x, y) == pytest.approx(float(m.pow(2).sum()), abs=0.15)


# --- KID -------------------------------------------------------------------------------------------------------


def brute_unbiased_mmd2(x: np.ndarray, y: np.ndarray, kernel) -> float:
    n, m = len(x), len(y)
    kxx = sum(kernel(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(kernel(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_kid_matches_hand_written_loop():
    x = torch.randn(6, 3, generator=gen(13), dtype=torch.float64)
    y = torch.randn(6, 3, generator=gen(14), dtype=torch.float64) + 0.7
    # One subset of the whole (capped) size is the full sets up to a permutation, which MMD² ignores.
    mean, std = kid(x, y, subsets=1, subset_size=1000, generator=gen())
    expected = brute_unbiased_mmd2(x.numpy(), y.numpy(), lambda a, b: (a @ b / 3 + 1) ** 3)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == 0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    n, size = 2000, 500
    x = torch.randn(n, 16, generator=gen(15))
    y = torch.randn(n, 16, generator=gen(16))
    mean, std = kid(x, y, subsets=50, subset_size=size, generator=gen(17))
    # Subsets overlap, so their mean is no better than the full-set estimate, whose null std is std·size/n
    # (the degenerate U-statistic's std falls like 1/n, not 1/√n).
    assert abs(mean) < 3 * std * size / n
    shifted_mean, shifted_std = kid(x, y + 0.5, subsets=50, subset_size=size, generator=gen(17))
    assert shifted_mean > 5 * shifted_std > 0


# --- precision / recall ----------------------------------------------------------------------------------------


def test_precision_recall_identical_sets():
    x = torch.randn(500, 4, generator=gen(18))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_precision_recall_fall_as_sets_move_apart():
    real = torch.randn(600, 2, generator=gen(19))
    fake = torch.randn(600, 2, generator=gen(20))
    pairs = [precision_recall(real, fake + torch.tensor([shift, 0.0]), chunk=100) for shift in (0.0, 1.5, 3.0, 12.0)]
    precisions, recalls = zip(*pairs, strict=True)
    assert list(precisions) == sorted(precisions, reverse=True) and list(recalls) == sorted(recalls, reverse=True)
    assert precisions[0] > 0.9 and recalls[0] > 0.9
    assert precisions[-1] == 0 and recalls[-1] == 0


def test_precision_recall_hand_checked_1d():
    # real {0, 1, 2, 10}, k = 1: radii 1, 1, 1, 8. fake {0.5, 3.5, 18.5, 30}: radii 3, 3, 11.5, 11.5.
    # precision: 0.5 is within 1 of 0; 3.5 is within 8 of 10 (6.5); 18.5 (8.5 from 10) and 30 are not → 2/4.
    # recall: 0, 1, 2 are within 3 of 0.5; 10 is within 11.5 of 18.5 → 4/4.
    real = torch.tensor([0.0, 1.0, 2.0, 10.0])[:, None]
    fake = torch.tensor([0.5, 3.5, 18.5, 30.0])[:, None]
    assert precision_recall(real, fake, k=1, chunk=3) == (0.5, 1.0)
    # k = 2: real radii 2, 1, 2, 9, so 18.5 (8.5 from 10) is now inside → precision 3/4; fake radii 18, 15, 15, 26.5
    # → recall 4/4.
    assert precision_recall(real, fake, k=2) == (0.75, 1.0)


# --- mode coverage ---------------------------------------------------------------------------------------------


CENTRES = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def test_mode_coverage_exact_counts():
    near = [[0.1, 0.0]] * 12 + [[10.0, 0.2]] * 5 + [[0.0, 9.95]] * 10  # 0.1 and 0.2 are within 3·0.1 std
    far = [[5.0, 5.0]] * 3 + [[0.5, 0.0]] * 2  # 0.5 from mode 0: off-mode
    result = mode_coverage(torch.tensor(near + far), CENTRES, std=0.1, min_count=10)
    assert result["counts"] == [12, 5, 10, 5]
    assert result["modes_captured"] == 2
    assert result["high_quality"] == pytest.approx(27 / 32)
    assert mode_coverage(torch.tensor(near + far), CENTRES, std=0.1, min_count=1)["modes_captured"] == 3


def test_mode_coverage_jsd_closed_forms():
    uniform = CENTRES.repeat_interleave(7, dim=0)
    assert mode_coverage(uniform, CENTRES, std=0.1)["jsd"] == pytest.approx(0, abs=1e-12)
    # All samples off-mode: supports are disjoint, so JSD = log 2 (natural log).
    assert mode_coverage(torch.full((9, 2), 5.0), CENTRES, std=0.1)["jsd"] == pytest.approx(math.log(2))
    # Two modes, all samples on the first: p = (1, 0, 0), q = (½, ½, 0), m = (¾, ¼, 0);
    # KL(p‖m) = log 4/3, KL(q‖m) = ½ log 4/3 (½ log ⅔ + ½ log 2), so JSD = ¾ log 4/3.
    two = CENTRES[:2]
    assert mode_coverage(torch.zeros(4, 2), two, std=0.1)["jsd"] == pytest.approx(0.75 * math.log(4 / 3))


def test_mode_coverage_on_a_mixture_sample():
    from genbits.data.toy2d import ring

    data = ring()
    batch = data.sample(2500, gen(21))
    result = mode_coverage(batch.x, data.centres, data.std)
    assert result["modes_captured"] == 8
    assert result["high_quality"] > 0.98  # P(‖z‖ ≤ 3) = 1 − e^{−4.5} ≈ 0.989 for a 2-D standard Gaussian
    assert result["jsd"] < 0.01


# --- MMD -------------------------------------------------------------------------------------------------------


def rbf_mixture(a: np.ndarray, b: np.ndarray, sigmas=(1, 2, 4, 8, 16)) -> float:
    return sum(math.exp(-((a - b) ** 2).sum() / (2 * s**2)) for s in sigmas)


def test_mmd2_matches_double_loop():
    x = torch.randn(5, 2, generator=gen(22), dtype=torch.float64) * 3
    y = torch.randn(7, 2, generator=gen(23), dtype=torch.float64) + 1
    xn, yn = x.numpy(), y.numpy()
    assert mmd2(x, y) == pytest.approx(brute_unbiased_mmd2(xn, yn, rbf_mixture), rel=1e-10)
    biased = (
        np.mean([[rbf_mixture(a, b) for b in xn] for a in xn])
        + np.mean([[rbf_mixture(a, b) for b in yn] for a in yn])
        - 2 * np.mean([[rbf_mixture(a, b) for b in yn] for a in xn])
    )
    assert mmd2(x, y, unbiased=False) == pytest.approx(biased, rel=1e-10)
    assert mmd2(x, y, unbiased=False) >= mmd2(x, y)


def test_unbiased_mmd2_averages_to_zero_for_one_distribution():
    values = torch.tensor(
        [mmd2(torch.randn(100, 2, generator=gen(s)), torch.randn(100, 2, generator=gen(s + 100))) for s in range(30)],
        dtype=torch.float64,
    )
    biased = mmd2(torch.randn(100, 2, generator=gen(0)), torch.randn(100, 2, generator=gen(100)), unbiased=False)
    assert abs(values.mean()) < 3 * values.std() / math.sqrt(len(values))
    assert biased > values[0]  # the V-statistic adds the positive diagonal terms


def test_mmd2_converges_to_gaussian_closed_form():
    # X ~ N(a, s²I), Y ~ N(b, s²I) in d dims: X − Y ~ N(a − b, 2s²I) and E exp(−‖Z‖²/(2σ²)) for Z ~ N(μ, τ²I) is
    # (σ²/(σ² + τ²))^{d/2} exp(−‖μ‖²/(2(σ² + τ²))), so MMD² = Σ_σ 2 (σ²/(σ²+2s²))^{d/2} (1 − exp(−‖a−b‖²/(2(σ²+2s²)))).
    d, s = 2, 1.0
    a, b = torch.zeros(d), torch.tensor([1.0, 0.5])
    sq = float((a - b).pow(2).sum())
    exact = sum(
        2 * (q**2 / (q**2 + 2 * s**2)) ** (d / 2) * (1 - math.exp(-sq / (2 * (q**2 + 2 * s**2))))
        for q in (1, 2, 4, 8, 16)
    )
    x = a + s * torch.randn(2000, d, generator=gen(24))
    y = b + s * torch.randn(2000, d, generator=gen(25))
    # Measured spread of the estimator at n = 1000 is 0.025 (exact ≈ 0.341); at n = 2000 about 0.018: 0.06 is > 3σ.
    assert mmd2(x, y) == pytest.approx(exact, abs=0.06)


# --- Wasserstein -----------------------------------------------------------------------------------------------


def test_wasserstein1_1d_matches_scipy():
    x = torch.randn(200, generator=gen(26)) * 2
    y = torch.rand(200, generator=gen(27)) * 5 - 1
    assert wasserstein1_1d(x, y) == pytest.approx(scipy.stats.wasserstein_distance(x.numpy(), y.numpy()), rel=1e-6)
    with pytest.raises(ValueError, match="equal size"):
        wasserstein1_1d(x, y[:10])


def test_wasserstein_exact_matches_brute_force_over_permutations():
    x = torch.randn(6, 2, generator=gen(28), dtype=torch.float64)
    y = torch.randn(6, 2, generator=gen(29), dtype=torch.float64) + 1
    cost = torch.cdist(x, y).numpy()
    for p in (1, 2):
        best = min(np.mean([cost[i, j] ** p for i, j in enumerate(perm)]) for perm in itertools.permutations(range(6)))
        assert wasserstein_exact(x, y, p=p) == pytest.approx(best ** (1 / p), rel=1e-12)


def test_sliced_wasserstein():
    x = torch.randn(400, 2, generator=gen(30))
    assert sliced_wasserstein(x, x.clone(), generator=gen(31)) == pytest.approx(0, abs=1e-12)
    # 1-D data shifted by c: the only directions are ±1, so the distance is exactly |c|.
    line = torch.randn(300, 1, generator=gen(32), dtype=torch.float64)
    assert sliced_wasserstein(line, line - 1.5, generator=gen(33)) == pytest.approx(1.5, rel=1e-12)
    # In 2-D a shift c projects to |⟨θ, c⟩| on every direction; E|cos| = 2/π for θ uniform on the circle.
    c = torch.tensor([2.0, 0.0])
    value = sliced_wasserstein(x, x + c, projections=4096, generator=gen(34))
    assert value == pytest.approx(2 * 2 / math.pi, rel=0.03)  # MC error ≈ 0.48/√4096 ≈ 0.6% relative


# --- likelihood ------------------------------------------------------------------------------------------------


def test_bits_per_dim():
    assert bits_per_dim(3 * 8 * math.log(2), 3) == pytest.approx(8)
    assert torch.allclose(bits_per_dim(torch.tensor([0.0, math.log(2)]), 1), torch.tensor([0.0, 1.0]))


def test_uniform_dequantization_gives_log2_levels_bits():
    dims, levels = 3072, 256
    nll = dequantized_nll(0.0, levels, dims)  # a uniform density on [0, 1)^dims has log p = 0
    assert nll == pytest.approx(dims * math.log(levels))
    assert bits_per_dim(nll, dims) == pytest.approx(8.0)


def test_histogram_density_dequantizes_to_the_exact_discrete_nll():
    # A density constant on each bin [x/L, (x+1)/L) with mass P(x) has p(y) = L·P(x): the bound is tight.
    levels, probs = 4, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    x = torch.tensor([0, 3, 3, 1, 2])
    nll_y = -(levels * probs[x]).log().mean()
    assert dequantized_nll(nll_y, levels, 1) == pytest.approx(float(-probs[x].log().mean()), rel=1e-12)
