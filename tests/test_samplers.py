"""Samplers tested without training: driven by the exact denoiser of Gaussian and mixture data, each must reproduce
the data at a stated NFE, and the ODE samplers' error must fall at their order. Guidance against hand computations
and autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genbits.models.diffusion import DiscreteSchedule, SigmaSchedule
from genbits.sampling.clipping import clip_denoised
from genbits.sampling.exact import gaussian_eps, mixture_eps
from genbits.sampling.guidance import classifier_free, classifier_guidance
from genbits.sampling.samplers import SAMPLER_FUNCTIONS, grid_size

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.5], [0.5, 0.6]], dtype=torch.float64)
N = 20000
# NFE at which each sampler must reproduce the data, on the linear schedule (T = 1000, trailing spacing)
NFE = {"ddpm": 250, "ddim": 100, "heun": 35, "dpm-solver++": 20}


def draw(name: str, eps_factory, nfe: int, n: int = N, seed: int = 0) -> torch.Tensor:
    schedule = DiscreteSchedule.linear(1000)
    alpha_bars = schedule.alpha_bar(schedule.grid(grid_size(name, nfe)))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, dtype=torch.float64, generator=generator)
    return SAMPLER_FUNCTIONS[name](eps_factory(alpha_bars), x, alpha_bars, generator=generator)


@pytest.mark.parametrize("name", NFE)
def test_every_sampler_reproduces_gaussian_data_with_the_exact_denoiser(name):
    x = draw(name, lambda ab: gaussian_eps(MEAN, COV, ab), NFE[name])
    se_mean = (COV.diagonal() / N).sqrt()
    assert torch.all((x.mean(0) - MEAN).abs() < 4 * se_mean + 0.01), (x.mean(0), MEAN)
    assert torch.allclose(torch.cov(x.T), COV, atol=0.04), torch.cov(x.T)  # se of a covariance entry ≈ 0.01


WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
CENTRES = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=torch.float64)
COVS = torch.stack([0.1 * torch.eye(2), 0.05 * torch.eye(2), torch.tensor([[0.2, 0.05], [0.05, 0.1]])]).double()


@pytest.mark.parametrize("name", NFE)
def test_every_sampler_reproduces_a_gaussian_mixture_with_the_exact_denoiser(name):
    n = 6000
    x = draw(name, lambda ab: mixture_eps(WEIGHTS, CENTRES, COVS, ab), NFE[name], n=n)
    nearest = torch.cdist(x, CENTRES).argmin(1)
    shares = torch.bincount(nearest, minlength=3).double() / n
    assert torch.allclose(shares, WEIGHTS, atol=0.02), shares  # se ≤ 0.0065
    for j in range(3):
        members = x[nearest == j]
        assert torch.allclose(members.mean(0), CENTRES[j], atol=0.05), (j, members.mean(0))
        assert torch.allclose(torch.cov(members.T), COVS[j], atol=0.04), (j, torch.cov(members.T))


def exact_ode_map(x_T: torch.Tensor, sigma_max: float, std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE from σ_max to 0 for x₀ ~ N(mean, diag(std²)), in closed form: in x̂ = x₀ + σε each
    coordinate's distance to the mean scales as √(std² + σ²), so x̂(0) − m = std/√(std² + σ_max²)·(x̂(σ_max) − m)."""
    x_hat = x_T * math.sqrt(1 + sigma_max**2)  # x_T = √ᾱ x̂ with ᾱ = 1/(1 + σ²)
    return mean + std / (std**2 + sigma_max**2).sqrt() * (x_hat - mean)


@pytest.mark.parametrize(("name", "order"), [("ddim", 1), ("heun", 2), ("dpm-solver++", 2)])
def test_ode_samplers_converge_at_their_order(name, order):
    schedule = SigmaSchedule(sigma_min=0.002, sigma_max=80.0)
    std, mean = torch.tensor([0.5, 2.0], dtype=torch.float64), torch.tensor([0.3, -1.0], dtype=torch.float64)
    x_T = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = exact_ode_map(x_T, 80.0, std, mean)
    levels = [16, 32, 64, 128]
    errors = []
    for K in levels:
        alpha_bars = schedule.alpha_bar(schedule.grid(K))
        out = SAMPLER_FUNCTIONS[name](gaussian_eps(mean, torch.diag(std**2), alpha_bars), x_T, alpha_bars)
        errors.append((out - exact).abs().max().item())
    slope = -np.polyfit(np.log(levels), np.log(errors), 1)[0]
    assert order - 0.35 < slope < order + 0.6, (slope, errors)


# ----------------------------------------------------------------------------------------------------
# Guidance.


def labelled_constant(x, k, labels):
    """A model whose ε̂ is its label: conditional outputs y, unconditional (null class 5) outputs 5."""
    return labels.double()[:, None].expand_as(x)


def test_classifier_free_guidance_is_the_hand_computed_combination():
    x = torch.zeros(3, 2, dtype=torch.float64)
    labels, null = torch.tensor([0, 1, 4]), torch.full((3,), 5)
    assert torch.equal(classifier_free(labelled_constant, labels, null, 0.0)(x, 0), labelled_constant(x, 0, labels))
    w = 2.5
    guided = classifier_free(labelled_constant, labels, null, w)(x, 0)
    expected = torch.tensor([(1 + w) * y - w * 5 for y in (0, 1, 4)], dtype=torch.float64)[:, None].expand(3, 2)
    assert torch.allclose(guided, expected)


def test_classifier_guidance_gradient_is_the_analytic_softmax_gradient():
    torch.manual_seed(0)
    W, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    y = torch.tensor([0, 3, 2, 1, 1])
    alpha_bars = torch.tensor([0.3, 0.8], dtype=torch.float64)

    def log_prob(x, k):  # a linear softmax classifier whose noise input is ignored
        return torch.log_softmax(x @ W.T + b, -1).gather(1, y[:, None]).squeeze(1)

    base = lambda x, k: torch.sin(x)  # noqa: E731
    x = torch.randn(5, 3, dtype=torch.float64)
    s = 1.7
    for k in (0, 1):
        p = torch.softmax(x @ W.T + b, -1)
        grad = W[y] - p @ W  # ∇_x log softmax_y = W_y − Σ_j p_j W_j
        expected = torch.sin(x) - s * (1 - alpha_bars[k]).sqrt() * grad
        assert torch.allclose(classifier_guidance(base, log_prob, alpha_bars, s)(x, k), expected, atol=1e-12)


# The cosine schedule's ᾱ_T ≈ 2.4e-9 with the default trailing spacing (first level t = T): a mixture inside the
# image range [−1, 1] and a denoiser with a 1% error, as a trained network has, blow up unless x̂₀ is clipped.
IMAGE_WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
IMAGE_CENTRES = torch.tensor([[-0.5, -0.5], [0.5, 0.4]], dtype=torch.float64)
IMAGE_COVS = torch.stack([0.01 * torch.eye(2), 0.02 * torch.eye(2)]).double()


def cosine_trailing_draw(name: str, error: float, clip: bool, nfe: int = 25, n: int = 4000) -> torch.Tensor:
    schedule = DiscreteSchedule.cosine(1000)
    alpha_bars = schedule.alpha_bar(schedule.grid(grid_size(name, nfe)))
    assert alpha_bars[0] < 1e-8  # the first level is t = T
    exact = mixture_eps(IMAGE_WEIGHTS, IMAGE_CENTRES, IMAGE_COVS, alpha_bars)

    def eps(x: torch.Tensor, k: int) -> torch.Tensor:
        return (1 + error) * exact(x, k)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, dtype=torch.float64, generator=generator)
    eps_fn = clip_denoised(eps, alpha_bars) if clip else eps
    return SAMPLER_FUNCTIONS[name](eps_fn, x, alpha_bars, generator=generator)


@pytest.mark.parametrize("name", ["ddim", "dpm-solver++", "heun"])
def test_an_imperfect_denoiser_blows_up_from_t_equal_T_on_the_cosine_schedule_without_clipping(name):
    assert cosine_trailing_draw(name, 0.01, clip=False).abs().max() > 1.5


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm-solver++"])  # not heun: see below
@pytest.mark.parametrize("error", [0.0, 0.01])
def test_clipping_x0_samples_the_mixture_from_t_equal_T_on_the_cosine_schedule(name, error):
    x = cosine_trailing_draw(name, error, clip=True)
    assert torch.isfinite(x).all() and x.abs().max() < 1.2
    nearest = torch.cdist(x, IMAGE_CENTRES).argmin(1)
    shares = torch.bincount(nearest, minlength=2).double() / len(x)
    assert torch.allclose(shares, IMAGE_WEIGHTS, atol=0.03), shares  # se ≈ 0.007
    for j in range(2):
        members = x[nearest == j]
        assert torch.allclose(members.mean(0), IMAGE_CENTRES[j], atol=0.03), (j, members.mean(0))
        assert torch.allclose(torch.cov(members.T), IMAGE_COVS[j], atol=0.01), (j, torch.cov(members.T))


def test_heun_from_t_equal_T_on_the_cosine_schedule_stays_in_range_but_is_not_accurate():
    """EDM's trapezoid spans σ ≈ 2e4 → 18 in its first step here (Karras et al.'s ρ-spaced grid never does): even
    the exact denoiser misses the mixture weights at 25 NFE. Clipping keeps it in range, nothing more."""
    x = cosine_trailing_draw("heun", 0.0, clip=True)
    share = (torch.cdist(x, IMAGE_CENTRES).argmin(1) == 0).double().mean()
    assert x.abs().max() <= 1 + 1e-9 and share > IMAGE_WEIGHTS[0] + 0.05, share


def test_clipping_leaves_a_denoiser_inside_the_range_alone_and_is_consistent_with_the_clipped_x0():
    alpha_bars = DiscreteSchedule.cosine(100).alpha_bars.flip(0)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    inside = mixture_eps(IMAGE_WEIGHTS, IMAGE_CENTRES, IMAGE_COVS, alpha_bars)
    for k in (0, 1, 2):  # at the noisiest levels x̂₀ of the exact denoiser is E[x₀ | x_t], inside the range
        assert torch.allclose(clip_denoised(inside, alpha_bars)(x, k), inside(x, k), atol=1e-9)
    k = 5
    a, s = alpha_bars[k].sqrt(), (1 - alpha_bars[k]).sqrt()
    wild = clip_denoised(lambda x, k: 3 * x, alpha_bars)(x, k)
    x0 = ((x - s * 3 * x) / a).clamp(-1, 1)
    assert torch.allclose(wild, (x - a * x0) / s) and torch.allclose((x - s * wild) / a, x0)
