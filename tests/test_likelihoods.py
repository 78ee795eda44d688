"""Observation models against independent computations: masses summing to 1 over the levels, values from the
logistic and normal CDFs written out directly in float64, scipy's densities, and the refusals of data they do not
fit."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from genbits.models.latent import diagonal_normal_log_prob, kl_diagonal_normals
from genbits.nn.likelihoods import Bernoulli, Gaussian, LogisticMixture, build_likelihood, logistic_bin_log_mass


def _random_dlm_params(batch: int, components: int, event: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    logits = torch.randn(batch, components, *event, generator=generator, dtype=torch.float64)
    loc = torch.rand(batch, components, *event, generator=generator, dtype=torch.float64) * 2.4 - 1.2
    log_scale = torch.rand(batch, components, *event, generator=generator, dtype=torch.float64) * 4 - 5
    return torch.cat([logits, loc, log_scale], 1)


@pytest.mark.parametrize("levels", [3, 17, 256])
def test_logistic_mixture_masses_sum_to_one_over_the_levels(levels):
    g = torch.Generator().manual_seed(levels)
    params = _random_dlm_params(5, 4, (1,), g).repeat_interleave(levels, 0)
    x = (torch.arange(levels, dtype=torch.float64) / (levels - 1)).repeat(5).unsqueeze(1)
    mass = LogisticMixture(levels, 4).log_prob(params, x).exp().reshape(5, levels).sum(1)
    torch.testing.assert_close(mass, torch.ones(5, dtype=torch.float64), atol=1e-10, rtol=0)


def test_logistic_mixture_matches_a_direct_cdf_difference():
    """P(k) = Σ_i π_i [F((c_k + δ − μ_i)/s_i) − F((c_k − δ − μ_i)/s_i)], end bins open, with scipy's logistic CDF."""
    levels, g = 17, torch.Generator().manual_seed(0)
    params = _random_dlm_params(6, 3, (2, 2), g)
    k = torch.randint(0, levels, (6, 2, 2), generator=g).double()
    ours = LogisticMixture(levels, 3).log_prob(params, k / (levels - 1))
    logits, loc, log_scale = (p.numpy() for p in params.chunk(3, 1))
    weights = torch.softmax(torch.from_numpy(logits), 1).numpy()
    centre = (2 * k / (levels - 1) - 1).unsqueeze(1).numpy()
    upper = stats.logistic.cdf(centre + 1 / (levels - 1), loc, torch.from_numpy(log_scale).exp().numpy())
    lower = stats.logistic.cdf(centre - 1 / (levels - 1), loc, torch.from_numpy(log_scale).exp().numpy())
    kk = k.unsqueeze(1).expand(-1, 3, -1, -1).numpy()
    upper[kk == levels - 1] = 1.0
    lower[kk == 0] = 0.0
    expected = torch.from_numpy((weights * (upper - lower)).sum(1)).log().flatten(1).sum(1)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)  # the direct difference cancels in the tails


def test_bin_mass_is_finite_and_accurate_far_in_both_tails():
    """log(σ(a) − σ(b)) against 50-digit arithmetic (mpmath) where float64 σ(a) − σ(b) would round to 0."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    upper = torch.tensor([40.0, -40.0, 0.5, 3.0], dtype=torch.float64)
    lower = upper - torch.tensor([0.25, 0.25, 0.25, 1e-6], dtype=torch.float64)
    ours = logistic_bin_log_mass(upper, lower)
    sigmoid = lambda v: 1 / (1 + mpmath.exp(-mpmath.mpf(v)))  # noqa: E731
    expected = [float(mpmath.log(sigmoid(a) - sigmoid(b))) for a, b in zip(upper.tolist(), lower.tolist(), strict=True)]
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=0)


def test_logistic_mixture_samples_follow_its_masses():
    levels, g = 5, torch.Generator().manual_seed(1)
    params = _random_dlm_params(1, 3, (1,), g)
    model = LogisticMixture(levels, 3)
    draws = model.sample(params.expand(20000, -1, -1), generator=g)
    counts = torch.bincount((draws.flatten() * (levels - 1)).round().long(), minlength=levels).double() / 20000
    grid = torch.arange(levels, dtype=torch.float64).unsqueeze(1) / (levels - 1)
    mass = model.log_prob(params.expand(levels, -1, -1), grid).exp()
    assert (counts - mass).abs().max() < 4 * math.sqrt(0.25 / 20000)


def test_bernoulli_and_gaussian_match_scipy():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 1, 3, generator=g, dtype=torch.float64)
    x = torch.bernoulli(torch.full((4, 3), 0.5, dtype=torch.float64), generator=g)
    expected = stats.bernoulli.logpmf(x.numpy(), torch.sigmoid(logits[:, 0]).numpy()).sum(1)
    torch.testing.assert_close(Bernoulli().log_prob(logits, x), torch.from_numpy(expected))
    params = torch.randn(4, 2, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 3, generator=g, dtype=torch.float64)
    expected = stats.norm.logpdf(y.numpy(), params[:, 0].numpy(), params[:, 1].exp().numpy()).sum(1)
    torch.testing.assert_close(Gaussian().log_prob(params, y), torch.from_numpy(expected))
    fixed = stats.norm.logpdf(y.numpy(), params[:, 0].numpy(), 0.3).sum(1)
    torch.testing.assert_close(Gaussian(scale=0.3).log_prob(params[:, :1], y), torch.from_numpy(fixed))


def test_dequantized_gaussian_bounds_the_discrete_mass_and_its_samples_are_levels():
    """E_u log p((k + u)/L) − D log L ≤ log P(k), where P(k) is the Gaussian mass of [k/L, (k + 1)/L)."""
    levels, loc, scale = 4, 0.45, 0.2
    model = Gaussian(scale=scale, levels=levels)
    params = torch.full((100000, 1, 1), loc, dtype=torch.float64)
    for k in range(levels):
        x = torch.full((100000, 1), k / (levels - 1), dtype=torch.float64)
        bound = model.log_prob(params, x).mean().item()
        mass = stats.norm.cdf((k + 1) / levels, loc, scale) - stats.norm.cdf(k / levels, loc, scale)
        assert bound <= math.log(mass) + 1e-3
    draws = model.sample(params[:1000])
    assert set((draws * (levels - 1)).round().unique().tolist()) <= set(range(levels))


def test_diagonal_normal_density_and_kl_vs_scipy_and_monte_carlo():
    g = torch.Generator().manual_seed(3)
    mq, lq, mp, lp = (torch.randn(5, generator=g, dtype=torch.float64) * 0.5 for _ in range(4))
    z = torch.randn(5, generator=g, dtype=torch.float64)
    expected = stats.norm.logpdf(z.numpy(), mq.numpy(), lq.exp().numpy())
    torch.testing.assert_close(diagonal_normal_log_prob(z, mq, lq), torch.from_numpy(expected))
    kl = kl_diagonal_normals(mq, lq, mp, lp)
    closed = torch.distributions.kl_divergence(
        torch.distributions.Normal(mq, lq.exp()), torch.distributions.Normal(mp, lp.exp())
    )
    torch.testing.assert_close(kl, closed)
    draws = mq + lq.exp() * torch.randn(200000, 5, generator=g, dtype=torch.float64)
    mc = diagonal_normal_log_prob(draws, mq, lq) - diagonal_normal_log_prob(draws, mp, lp)
    stderr = mc.std(0) / math.sqrt(len(mc))
    assert ((mc.mean(0) - kl).abs() < 5 * stderr).all()


@pytest.mark.parametrize(
    ("name", "levels", "message"),
    [
        ("bernoulli", 256, "needs binarized data"),
        ("bernoulli", None, "needs binarized data"),
        ("logistic-mixture", 2, "the data are binarized: use bernoulli"),
        ("logistic-mixture", None, "the data are continuous: use gaussian"),
        ("gaussian", 2, "use bernoulli"),
        ("poisson", 256, "must be one of"),
    ],
)
def test_a_likelihood_that_does_not_fit_the_data_is_refused(name, levels, message):
    with pytest.raises(ValueError, match=message):
        build_likelihood(name, levels)
