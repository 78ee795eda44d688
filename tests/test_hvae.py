"""The NVAE-style hierarchical VAE and its bits, each against an independent computation: squeeze-and-excitation by
hand, the residual posterior's KL against its closed form, torch.distributions and Monte Carlo, spectral norms
against SVD, KL balancing and warm-up (the ``elbo`` objective on this model) against NVAE's rules by hand."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from helpers import assert_same_state, final_state
from torch import nn

import genbits.components  # noqa: F401  (fills the registries)
from genbits import load_config
from genbits.data import build_dataset
from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.models.hvae import Normal
from genbits.nn.activations import activation
from genbits.nn.nvae import GenerativeCell, ResidualCell, SqueezeExcitation
from genbits.nn.regularization import SpectralRegularization
from genbits.objectives.base import Progress
from genbits.objectives.elbo import Elbo
from genbits.optim.rules import make_optimizer
from genbits.registry import MODELS
from genbits.train import train

TINY = {"channels": 8, "latent_channels": 2, "scales": 2, "groups_per_scale": 2, "preprocess": 0, "components": 2}
NVAE_ELBO = {"warmup": 0.3, "warmup_floor": 1e-4, "kl_balancing": True}


@functools.cache
def digits():
    return build_dataset("digits", {})


def tiny_hvae(**options):
    dataset = digits()
    model = MODELS.build("hvae", {**TINY, **options}, event_shape=dataset.event_shape, dataset=dataset)
    return model, dataset.get(torch.arange(16))


# ----------------------------------------------------------------------------------------------------
# Cells.


def test_squeeze_excitation_matches_a_hand_computation():
    torch.manual_seed(0)
    se = SqueezeExcitation(8)
    x = torch.randn(3, 8, 5, 4)
    (w1, b1), (w2, b2) = [(layer.weight, layer.bias) for layer in se.gate if isinstance(layer, nn.Linear)]
    assert w1.shape == (4, 8)  # max(8 // 16, 4) hidden units
    expected = torch.empty_like(x)
    for i in range(3):
        means = torch.tensor([x[i, c].sum() / 20 for c in range(8)])
        hidden = torch.clamp(w1 @ means + b1, min=0)
        gates = 1 / (1 + torch.exp(-(w2 @ hidden + b2)))
        for c in range(8):
            expected[i, c] = x[i, c] * gates[c]
    torch.testing.assert_close(se(x), expected)


@pytest.mark.parametrize("cell", ["residual", "generative", "generative-full"])
@pytest.mark.parametrize("act", ["swish", "relu", "elu"])
def test_cells_keep_shape_and_take_their_bits_as_arguments(cell, act):
    options = {"activation_name": act, "bn_momentum": 0.05, "squeeze_excitation": cell != "residual"}
    built = (
        ResidualCell(8, **options)
        if cell == "residual"
        else GenerativeCell(8, **options, depthwise=cell == "generative")
    )
    x = torch.randn(4, 8, 6, 5)
    assert built(x).shape == x.shape
    norms = [m for m in built.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.05 for m in norms)
    assert any(isinstance(m, type(activation(act)())) for m in built.modules())
    assert any(isinstance(m, SqueezeExcitation) for m in built.modules()) == (cell != "residual")
    depthwise = [m for m in built.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert bool(depthwise) == (cell == "generative")


def test_batch_norm_momentum_moves_running_statistics_by_that_fraction():
    cell = ResidualCell(4, bn_momentum=0.05)
    norm = cell.f[0]
    x = torch.randn(16, 4, 3, 3) + 2.0
    cell(x)
    torch.testing.assert_close(norm.running_mean, 0.05 * x.mean((0, 2, 3)))


def test_unknown_activation_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="'softsign' is unknown; use one of relu, leaky-relu, elu, gelu, silu, swish"):
        activation("softsign")


# ----------------------------------------------------------------------------------------------------
# The residual posterior.


def residual_pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu_p, sigma_p = torch.randn(5, 3, 2, 2, generator=g), torch.rand(5, 3, 2, 2, generator=g) + 0.3
    delta_mu, delta_sigma = 0.5 * torch.randn(5, 3, 2, 2, generator=g), torch.rand(5, 3, 2, 2, generator=g) + 0.5
    return mu_p, sigma_p, delta_mu, delta_sigma


def test_residual_posterior_kl_matches_the_closed_form_and_torch_distributions():
    mu_p, sigma_p, delta_mu, delta_sigma = residual_pair()
    q, p = Normal(mu_p + delta_mu, sigma_p * delta_sigma), Normal(mu_p, sigma_p)
    by_hand = 0.5 * (delta_mu**2 / sigma_p**2 + delta_sigma**2 - 1) - delta_sigma.log()  # NVAE eq. 2
    torch.testing.assert_close(q.kl(p), by_hand.flatten(1))
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mu, q.sigma), torch.distributions.Normal(p.mu, p.sigma)
    )
    torch.testing.assert_close(q.kl(p), reference.flatten(1))


def test_residual_posterior_kl_matches_monte_carlo():
    mu_p, sigma_p, delta_mu, delta_sigma = residual_pair(1)
    q, p = Normal(mu_p + delta_mu, sigma_p * delta_sigma), Normal(mu_p, sigma_p)
    draws = 20000
    q_many, p_many = (Normal(d.mu.repeat(draws, 1, 1, 1), d.sigma.repeat(draws, 1, 1, 1)) for d in (q, p))
    z = q_many.sample(torch.Generator().manual_seed(2))
    log_ratios = (q_many.log_prob(z) - p_many.log_prob(z)).view(draws, 5)
    estimate, error = log_ratios.mean(0), log_ratios.std(0) / math.sqrt(draws)
    assert ((estimate - q.kl(p).sum(1)).abs() < 5 * error).all(), (estimate, q.kl(p).sum(1), error)


def zero_posterior_heads(model) -> None:
    with torch.no_grad():
        for head in model.posterior:
            head[-1].weight.zero_()
            head[-1].bias.zero_()


def test_residual_posterior_equals_the_prior_when_the_encoder_adds_nothing():
    """Δμ = 0, log Δσ = 0 (posterior heads zeroed): q = p in every group, so every KL is 0; the absolute
    parametrization with the same heads gives q = N(0, 1.01²), not the prior below the top."""
    torch.manual_seed(0)
    model, batch = tiny_hvae()
    zero_posterior_heads(model)
    terms = model.elbo_terms(batch.x)
    for g in range(model.groups):
        torch.testing.assert_close(terms[f"kl/{g}"], torch.zeros(16))
    torch.manual_seed(0)
    absolute, _ = tiny_hvae(residual_posterior=False)
    zero_posterior_heads(absolute)
    kl = absolute.elbo_terms(batch.x)
    assert all((kl[f"kl/{g}"] > 1e-3).all() for g in range(1, absolute.groups))


def test_soft_clamp_bounds_mean_and_log_sigma():
    big = torch.tensor([-100.0, 0.0, 3.0, 100.0])
    clamped = Normal.from_raw(big, big, soft_clamp=True)
    torch.testing.assert_close(clamped.mu, 5 * torch.tanh(big / 5))
    torch.testing.assert_close(clamped.sigma, torch.exp(5 * torch.tanh(big / 5)) + 0.01)
    assert torch.isinf(Normal.from_raw(big, big, soft_clamp=False).sigma[-1])


# ----------------------------------------------------------------------------------------------------
# Spectral regularization.


def small_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 8, 1), nn.Flatten(), nn.Linear(8, 5))


def svd_sigmas(net: nn.Module) -> torch.Tensor:
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return torch.stack([torch.linalg.matrix_norm(w.detach().flatten(1), ord=2) for w in weights])


def test_spectral_norm_estimates_converge_to_svd_and_persist_across_steps():
    net = small_network()
    reg = SpectralRegularization(net, strength=0.01)
    start = [e.u.clone() for e in reg.estimators]
    for _ in range(30):  # 40 iterations at construction, then 4 per call
        estimate = reg.sigmas()
    torch.testing.assert_close(estimate, svd_sigmas(net), rtol=1e-4, atol=0)
    assert all(not torch.equal(a, e.u) for a, e in zip(start, reg.estimators, strict=True))
    # training moves the weights a little each step: 4 iterations from the persisted u keep track
    for _ in range(10):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1e-3 * torch.randn_like(p))
        estimate = reg.sigmas()
        truth = svd_sigmas(net)
        assert (estimate <= truth * (1 + 1e-5)).all()  # uᵀWv ≤ σ_max for unit u, v
        torch.testing.assert_close(estimate, truth, rtol=1e-3, atol=0)
    # in eval mode nothing moves; the vectors live in the state dict (checkpointed)
    reg.eval()
    frozen = [e.u.clone() for e in reg.estimators]
    reg.sigmas()
    assert all(torch.equal(a, e.u) for a, e in zip(frozen, reg.estimators, strict=True))
    assert {f"estimators.{i}.u" for i in range(3)} == set(reg.state_dict())


def test_spectral_regularization_loss_and_gradient_match_svd_and_batch_norm_scales():
    net = small_network()
    with torch.no_grad():
        net[1].weight.copy_(torch.linspace(-3, 2, 16))
    reg = SpectralRegularization(net, strength=0.1)
    for _ in range(30):
        reg.sigmas()
    loss = reg()
    torch.testing.assert_close(loss, 0.1 * (svd_sigmas(net).sum() + 3.0), rtol=1e-4, atol=0)
    layer = net[0]
    (grad,) = torch.autograd.grad(loss, layer.weight)
    exact = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2)
    (reference,) = torch.autograd.grad(0.1 * exact, layer.weight)  # ∂σ/∂W = u₁v₁ᵀ
    torch.testing.assert_close(grad, reference, rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# KL warm-up and balancing: the ``elbo`` objective on this model against NVAE's rules.


def test_kl_weight_follows_nvae_warmup():
    """NVAE: β = clamp((t − 1e-4)/0.3, 1e-4, 1); the objective's max(t/0.3, 1e-4) differs by < 1e-3 (t in [0, 1])."""
    objective = Elbo(**{k: v for k, v in NVAE_ELBO.items() if k != "kl_balancing"})
    for step in (0, 1, 150, 299, 300, 301, 999):
        objective.progress = Progress(step, 1000)
        nvae = min(1.0, max(1e-4, (step / 1000 - 1e-4) / 0.3))
        assert abs(objective.kl_weight() - nvae) < 1e-3, step
    objective.progress = Progress(0, 1000)
    assert objective.kl_weight() == pytest.approx(1e-4)


def nvae_balancing(kl: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """NVAE's kl_balancer by hand: c = mean_B |KL_g| + 0.01; c ← c / α · Σc; c ← c / mean c."""
    c = kl.abs().mean(0) + 0.01
    c = c / alpha * c.sum()
    return c / c.mean()


def test_nvae_balancing_rule_matches_a_hand_computation():
    kl = torch.tensor([[1.0, 4.0, 2.0], [3.0, 0.0, 2.0]])  # (B=2, G=3)
    # mean |KL| + 0.01 = 2.01 each; ÷ α = (1, 1, 4), × 6.03 → 12.1203, 12.1203, 3.030075; mean 9.090225
    expected = torch.tensor([12.1203, 12.1203, 3.030075]) / 9.090225
    torch.testing.assert_close(nvae_balancing(kl, torch.tensor([1.0, 1.0, 4.0])), expected)


def test_warmed_up_balanced_loss_is_nvae_loss_with_area_proportional_alpha():
    """While β < 1, the objective's loss on this model equals NVAE's: −log p(x | z) + β Σ_g c_g KL_g with c_g from
    NVAE's balancer and α_g ∝ the group's area (NVAE's "square" rule: 1 at the top scale, 4 at the next), plus the
    regularization."""
    model, batch = tiny_hvae()
    assert model.group_sizes == [(4, 4), (4, 4), (8, 8), (8, 8)]
    objective = Elbo(**NVAE_ELBO)
    objective.progress = Progress(30, 200)
    torch.manual_seed(4)
    loss = objective(model, batch).per_player["model"]
    torch.manual_seed(4)
    terms = model.elbo_terms(batch.x)
    kl = torch.stack([terms[f"kl/{g}"] for g in range(model.groups)], 1)
    beta = 30 / 200 / 0.3
    c = nvae_balancing(kl, torch.tensor([1.0, 1.0, 4.0, 4.0]))
    model.eval()  # the regularization at the same power-iteration vectors, without another iteration
    expected = (beta * (kl * c).sum(1) + terms["reconstruction"]).mean() + model.regularization()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)


def test_at_full_kl_weight_the_loss_is_minus_the_elbo_plus_regularization():
    model, batch = tiny_hvae()
    torch.manual_seed(3)
    losses = Elbo(**NVAE_ELBO)(model, Batch(batch.x, None))  # progress reads as finished: β = 1, no balancing
    torch.manual_seed(3)
    elbo = model.elbo(batch.x)
    model.eval()
    expected = -elbo.mean() + model.regularization()
    torch.testing.assert_close(losses.per_player["model"], expected, rtol=1e-5, atol=1e-3)
    assert losses.metrics["regularization"] > 0


def test_log_weights_average_to_the_elbo():
    """E_q[log p(x, z) − log q(z | x)] = ELBO: the mean of many log weights matches the closed-form-KL ELBO."""
    model, batch = tiny_hvae()
    model.eval()
    x = batch.x[:2]
    with torch.no_grad():
        torch.manual_seed(5)
        weights = model.log_weights(x, k=200)
        torch.manual_seed(6)
        elbos = model.elbo(x.repeat(40, 1, 1, 1)).view(40, 2)  # only the reconstruction is sampled here
    assert weights.shape == (200, 2)
    error = weights.std(0) / math.sqrt(200) + elbos.std(0) / math.sqrt(40)
    assert ((weights.mean(0) - elbos.mean(0)).abs() < 5 * error).all(), (weights.mean(0), elbos.mean(0), error)


# ----------------------------------------------------------------------------------------------------
# Sampling, bad input, optimizer, resume.


def test_samples_lie_on_the_grey_levels_and_temperature_scales_the_priors():
    model, _ = tiny_hvae()
    model.eval()
    x = model.sample(5, generator=torch.Generator().manual_seed(0), temperature=0.5)
    assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(x * 16, (x * 16).round())
    with pytest.raises(ConfigError, match="temperature"):
        model.sample(2, temperature=0.0)


def test_the_top_group_alone_is_the_one_top_down_uses():
    """top_posterior/top_prior (what vae-posterior-holes measures) give the top group's KL in the ELBO."""
    model, x = tiny_hvae()
    model.eval()
    with torch.no_grad():
        kl = model.top_posterior(x.x).kl(model.top_prior(len(x.x))).sum(1)
        torch.testing.assert_close(kl, model.elbo_parts(x.x).kl_per_group()["0"])


def test_the_stream_noise_gives_each_example_its_own_draws_however_the_batch_is_split():
    """With the batch's ExampleNoise, each example's k importance draws do not depend on which shard holds it (what
    makes DDP shards train as one process), and the k copies of an example draw different noise."""
    from genbits.train.stream import BatchStream

    model, _ = tiny_hvae()
    model.eval()
    batch = next(BatchStream(digits(), 8, seed=0))
    with torch.no_grad():
        whole = model.log_weights(batch.x, k=3, noise=batch.noise)
        halves = [model.log_weights(batch.x[i], k=3, noise=batch.noise[i]) for i in (slice(0, 5), slice(5, 8))]
    torch.testing.assert_close(torch.cat(halves, 1), whole)
    assert (whole[0] != whole[1]).all()


def test_sample_plots_draw_an_image_grid_not_text(tmp_path):
    """Nothing on the model may look like the Text protocol's ``decode``: the end-of-training plot would decode it."""
    from genbits.runs.plots import plot_samples

    model, _ = tiny_hvae()
    model.eval()
    plot_samples(model, digits(), tmp_path / "samples.png", torch.Generator().manual_seed(0))
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_hvae_refuses_data_that_are_not_images():
    config = load_config({"data": "ring", "model": "hvae", "objective": "elbo"})
    from genbits.train.parts import build_parts

    with pytest.raises(ConfigError, match="images"):
        build_parts(config)


def test_preset_optimizer_is_adamax_with_a_cosine_schedule():
    config = load_config("hvae-fmnist14")
    optim = config.optim
    assert (optim.optimizer, optim.schedule, optim.lr, optim.lr * optim.final_lr_ratio) == (
        "adamax",
        "cosine",
        1e-2,
        1e-4,
    )
    params = [nn.Parameter(torch.zeros(2))]
    optimizer = make_optimizer(params, optim.for_player("model"))
    assert isinstance(optimizer, torch.optim.Adamax)
    assert optimizer.defaults["eps"] == 1e-3 and optimizer.defaults["weight_decay"] == 3e-4


def test_hvae_resumes_exactly(tmp_path):
    setting = {
        "data": "digits",
        "model": {"name": "hvae", **TINY, "groups_per_scale": 1},
        "objective": {"name": "elbo", **NVAE_ELBO},
        "optim": {"optimizer": "adamax", "lr": 1e-2, "schedule": "cosine"},
    }
    run = {"batch_size": 16, "log_every": 1, "sample_every": None, "checkpoint_every": 1, "ema_decay": 0.9}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(load_config({**setting, "train": {**run, "steps": 2}}), straight, progress=False)
    train(load_config({**setting, "train": {**run, "steps": 1}}), resumed, progress=False)
    train(load_config({**setting, "train": {**run, "steps": 2}}), resumed, progress=False)
    assert_same_state(final_state(straight), final_state(resumed))
