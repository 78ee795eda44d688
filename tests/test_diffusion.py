"""The diffusion model's numerics against independent references: schedules vs closed forms and diffusers' tables,
the forward process and the posterior vs Gaussian algebra, conversions, DDIM's identities, the bound on the exact
Gaussian denoiser; and its one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genbits.cli import main
from genbits.errors import ConfigError
from genbits.models.diffusion import (
    Diffusion,
    DiscreteSchedule,
    SigmaSchedule,
    convert,
    diffusion,
    elbo_terms,
    log_gaussian_bin,
    posterior,
    q_sample,
)
from genbits.sampling.exact import gaussian_eps
from genbits.sampling.samplers import ddim, ddim_encode, ddpm

# ----------------------------------------------------------------------------------------------------
# Schedules.


def test_linear_schedule_is_the_cumulative_product_of_linear_betas():
    schedule = DiscreteSchedule.linear(1000)
    betas = 1e-4 + np.arange(1000) * (0.02 - 1e-4) / 999
    assert np.allclose(schedule.betas.numpy(), betas, rtol=1e-10, atol=1e-14)
    assert np.allclose(schedule.alpha_bars.numpy(), np.exp(np.cumsum(np.log1p(-betas))), rtol=1e-10)


def test_cosine_schedule_matches_its_closed_form_below_the_clip():
    T, s = 1000, 0.008
    schedule = DiscreteSchedule.cosine(T)
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    closed = f[1:] / f[0]
    assert np.allclose(schedule.alpha_bars.numpy()[:-1], closed[:-1], rtol=1e-9)
    assert schedule.betas[-1].item() == pytest.approx(0.999)  # the clip is hit only at t = T
    assert 1e-9 < schedule.alpha_bars[-1].item() < 1e-8


@pytest.mark.parametrize(("ours", "theirs"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_schedules_match_diffusers(ours, theirs):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    schedule = getattr(DiscreteSchedule, ours)(1000)
    assert np.allclose(schedule.alpha_bars.numpy(), reference.alphas_cumprod.double().numpy(), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_time_spacings_match_diffusers_ddim(spacing):
    diffusers = pytest.importorskip("diffusers")
    schedule = DiscreteSchedule.linear(1000)
    for steps in (10, 50, 333):
        reference = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
        reference.set_timesteps(steps)
        shift = 0 if spacing == "leading" else 1  # diffusers counts t from 0; its leading spacing adds steps_offset
        assert schedule.grid(steps, spacing).tolist() == (reference.timesteps.numpy() + shift).tolist()


def test_sigma_schedule_times_are_karras_sigmas():
    schedule = SigmaSchedule(0.002, 80.0, 7.0)
    t = schedule.grid(18)
    i = np.arange(18)
    karras = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # Karras et al. 2022, Eq. 5
    assert np.allclose(schedule.sigma(t).numpy(), karras, rtol=1e-12)
    assert np.allclose(schedule.alpha_bar(t).numpy(), 1 / (1 + karras**2), rtol=1e-12)
    assert torch.allclose(schedule.t_of_sigma(schedule.sigma(t)), t, atol=1e-12)


def test_log_normal_training_times_have_edms_distribution():
    torch.manual_seed(0)
    schedule = SigmaSchedule(1e-6, 1e6, training="log-normal", p_mean=-1.2, p_std=1.2)
    log_sigma = schedule.sigma(schedule.sample_t(20000)).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.03)


# ----------------------------------------------------------------------------------------------------
# Forward process, posterior, conversions.


def test_forward_process_moments_are_empirically_right():
    torch.manual_seed(0)
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(200000, 2)
    alpha_bar = torch.tensor(0.3, dtype=torch.float64)
    x_t = q_sample(x0, alpha_bar, torch.randn_like(x0))
    assert torch.allclose(x_t.mean(0), math.sqrt(0.3) * x0[0], atol=0.01)
    assert torch.allclose(x_t.var(0), torch.full((2,), 0.7, dtype=torch.float64), atol=0.01)


def test_posterior_is_bayes_rule_of_the_two_gaussians():
    schedule = DiscreteSchedule.cosine(100)
    torch.manual_seed(0)
    x0, x_t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for t in (2, 50, 100):
        ab, ab_prev = schedule.alpha_bar(torch.tensor(t)), schedule.alpha_bar(torch.tensor(t - 1))
        mean, var = posterior(x0, x_t, ab, ab_prev)
        alpha = ab / ab_prev
        # prior q(x_{t-1} | x0) = N(√ᾱ_{t−1} x0, 1 − ᾱ_{t−1}), likelihood q(x_t | x_{t−1}) = N(√α x_{t−1}, 1 − α)
        precision = 1 / (1 - ab_prev) + alpha / (1 - alpha)
        expected = (ab_prev.sqrt() * x0 / (1 - ab_prev) + alpha.sqrt() * x_t / (1 - alpha)) / precision
        assert torch.allclose(var, 1 / precision, rtol=1e-10)
        assert torch.allclose(mean, expected, rtol=1e-9, atol=1e-12)


def test_conversions_round_trip_and_agree_with_the_truth():
    torch.manual_seed(0)
    x0, eps = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    alpha_bar = torch.rand(6, dtype=torch.float64) * 0.98 + 0.01
    a, s = alpha_bar.sqrt()[:, None], (1 - alpha_bar).sqrt()[:, None]
    x_t = a * x0 + s * eps
    truth = {"eps": eps, "x0": x0, "v": a * eps - s * x0}
    for source in truth:
        for target in truth:
            converted = convert(truth[source], source, target, x_t, alpha_bar)
            assert torch.allclose(converted, truth[target], atol=1e-10), (source, target)
            back = convert(converted, target, source, x_t, alpha_bar)
            assert torch.allclose(back, truth[source], atol=1e-10)


# ----------------------------------------------------------------------------------------------------
# DDPM and DDIM identities.


def smooth_eps(x, k):
    """Any deterministic ε̂ will do for identities between samplers."""
    return torch.tanh(x) * 0.5 + 0.1 * k / 10


def diffusers_loop(scheduler, x, steps, **step_options):
    """diffusers' sampling loop driven by smooth_eps (its k-th call sees level k, as ours do)."""
    scheduler.set_timesteps(steps)
    for k, t in enumerate(scheduler.timesteps.tolist()):
        x = scheduler.step(smooth_eps(x, k), t, x, **step_options).prev_sample
    return x


@pytest.mark.parametrize(("variance", "kind"), [("beta-tilde", "fixed_small"), ("beta", "fixed_large")])
@pytest.mark.parametrize("steps", [1000, 50])
def test_ancestral_sampling_matches_diffusers_ddpm(variance, kind, steps):
    diffusers = pytest.importorskip("diffusers")
    schedule = DiscreteSchedule.linear(1000)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    alpha_bars = schedule.alpha_bar(schedule.grid(steps, "leading"))
    ours = ddpm(smooth_eps, x, alpha_bars, variance, generator=torch.Generator().manual_seed(1))
    reference = diffusers.DDPMScheduler(variance_type=kind, clip_sample=False)
    theirs = diffusers_loop(reference, x, steps, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours - theirs).abs().max()


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers(eta):
    diffusers = pytest.importorskip("diffusers")
    schedule = DiscreteSchedule.linear(1000)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    alpha_bars = schedule.alpha_bar(schedule.grid(20, "trailing"))
    ours = ddim(smooth_eps, x, alpha_bars, eta, generator=torch.Generator().manual_seed(1))
    reference = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    theirs = diffusers_loop(reference, x, 20, eta=eta, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours - theirs).abs().max()


def test_ddim_with_eta_one_is_ancestral_sampling_with_beta_tilde():
    schedule = DiscreteSchedule.cosine(200)
    alpha_bars = schedule.alpha_bar(schedule.grid(25))
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = ddim(smooth_eps, x, alpha_bars, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = ddpm(smooth_eps, x, alpha_bars, "beta-tilde", generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, atol=1e-10)


def test_ddim_with_eta_zero_is_deterministic_and_inverts_with_error_shrinking_in_steps():
    mean, cov = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    cov = cov.double()
    schedule = DiscreteSchedule.cosine(1000)
    x0 = torch.distributions.MultivariateNormal(mean, cov).sample((256,))
    errors = []
    for steps in (10, 40, 160):
        alpha_bars = schedule.alpha_bar(schedule.grid(steps))
        eps = gaussian_eps(mean, cov, alpha_bars)
        x_T = ddim_encode(eps, x0, alpha_bars)
        decoded = ddim(eps, x_T, alpha_bars, generator=torch.Generator().manual_seed(0))
        assert torch.equal(decoded, ddim(eps, x_T, alpha_bars, generator=torch.Generator().manual_seed(1)))
        errors.append((decoded - x0).norm(dim=1).mean().item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.02 * x0.norm(dim=1).mean().item(), errors


# ----------------------------------------------------------------------------------------------------
# The bound.


def test_discretized_gaussian_bins_sum_to_one_and_match_the_cdf():
    levels = 5
    grid = torch.linspace(-1, 1, levels, dtype=torch.float64)
    mean, std = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    log_p = log_gaussian_bin(grid, mean, std, 1 / (levels - 1))
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    normal = torch.distributions.Normal(mean, std)
    middle = normal.cdf(grid[2] + 0.25) - normal.cdf(grid[2] - 0.25)
    assert log_p[2].exp().item() == pytest.approx(middle.item(), rel=1e-10)
    far = log_gaussian_bin(torch.tensor([0.5], dtype=torch.float64), torch.tensor(-20.0), std, 0.25)
    assert torch.isfinite(far).all()  # the upper tail without cancellation


def test_negative_elbo_of_the_exact_gaussian_denoiser_bounds_the_nll_and_tightens_with_T():
    """With σ_t² = β the bound tends to the NLL as T grows; with β̃ it stays a bound, loose by the first steps."""
    torch.manual_seed(0)
    mean, cov = torch.tensor([0.3, -0.2], dtype=torch.float64), torch.diag(torch.tensor([0.02, 1.0])).double()
    x0 = torch.distributions.MultivariateNormal(mean, cov).sample((1000,))
    nll = -torch.distributions.MultivariateNormal(mean, cov).log_prob(x0)

    def gap(T: int, variance: str) -> tuple[float, float]:
        alpha_bars = DiscreteSchedule.cosine(T).alpha_bars
        eps = gaussian_eps(mean, cov, alpha_bars)
        terms = elbo_terms(eps, x0, alpha_bars, variance=variance, generator=torch.Generator().manual_seed(T))
        assert len(terms) == T + 1  # L_T, L_1 … L_{T−1}, L_0
        d = sum(terms.values()) - nll  # per example: −ELBO − (−log p)
        return d.mean().item(), d.std().item() / math.sqrt(len(d))

    (g10, se10), (g100, se100), (g1000, se1000) = (gap(T, "beta") for T in (10, 100, 1000))
    assert g10 > max(g100 + 3 * (se10 + se100), g1000 + 3 * (se10 + se1000)), (g10, g100, g1000)
    assert -3 * se1000 < g1000 < 3 * se1000 + 0.05, (g1000, se1000)  # the bound, and tight up to ~0.05 nats
    loose, se = gap(100, "beta-tilde")
    assert loose > g100 + 0.3 and loose > 3 * se, (loose, g100)


# ----------------------------------------------------------------------------------------------------
# The model and its errors.


def tiny(**options):
    return diffusion((2,), net_options={"width": 8, "depth": 1}, steps=50, **options)


def test_the_model_refuses_bad_sampling_options_in_one_line():
    model = tiny()
    cases = {
        "guidance": dict(guidance=2.0),
        "more than the model's T = 50": dict(steps=51),
        "did you mean 'dpm-solver\\+\\+'": dict(sampler="dpm-solver"),
        "eta is for the ddim sampler": dict(sampler="ddpm", eta=0.5),
        "spacing: 'uniform' is unknown": dict(spacing="uniform"),
        "not understood": dict(temperature=0.5),
    }
    for message, how in cases.items():
        with pytest.raises(ConfigError, match=message) as info:
            model.sample(2, **how)
        assert "\n" not in str(info.value)
    conditional = diffusion((2,), num_classes=3, conditional=True, net_options={"width": 8, "depth": 1}, steps=50)
    with pytest.raises(ConfigError, match=r"classes in \[0, 3\)"):
        conditional.sample(2, torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match="not a run directory"):
        conditional.sample(2, classifier="/nonexistent")
    with pytest.raises(ValueError, match="no labels"):
        diffusion((2,), conditional=True)


def test_guidance_zero_is_the_conditional_model_and_elbo_is_per_example():
    model = diffusion((2,), num_classes=3, conditional=True, net_options={"width": 8, "depth": 1}, steps=20)
    y = torch.tensor([0, 1, 2, 1])
    plain = model.sample(4, y, torch.Generator().manual_seed(0), sampler="ddim", steps=5)
    guided = model.sample(4, y, torch.Generator().manual_seed(0), sampler="ddim", steps=5, guidance=0.0)
    assert torch.equal(plain, guided)
    assert not torch.equal(
        plain, model.sample(4, y, torch.Generator().manual_seed(0), sampler="ddim", steps=5, guidance=3.0)
    )
    terms = model.elbo_terms(torch.rand(4, 2), y)
    assert set(terms) == {"L_T", "L_0", *(f"L_{i}" for i in range(1, 20))}
    assert all(v.shape == (4,) for v in terms.values())


def test_cli_samples_and_evaluates_with_diffusion_options_and_refuses_bad_ones(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "data: {name: ring}\n"
        "model: {name: diffusion, net_options: {width: 16, depth: 1}, steps: 20, conditional: true}\n"
        "objective: {name: denoising, p_uncond: 0.2}\n"
        "train: {steps: 3, batch_size: 32, sample_every: null, eval_samples: 200}\n"
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    out = tmp_path / "x.npy"
    how = ["--sampler", "ddim", "--steps", "5", "--eta", "0.5", "--guidance", "2"]
    assert main(["sample", str(run), "-n", "16", "--class", "3", *how, "--out", str(out)]) == 0
    assert np.load(out).shape == (16, 2)
    assert (
        main(["sample", str(run), "-n", "4", "--steps", "3", "--sampler", "ddim", "--no-clip", "--out", str(out)]) == 0
    )
    assert main(["eval", str(run), "-n", "100", "--metrics", "elbo,modes", *how, "--no-progress"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert {"test_nelbo", "true_nll", "elbo_gap"} <= result.keys()
    assert set(result["elbo_terms"]) == {"L_T", "L_0", *(f"L_{i}" for i in range(1, 20))}
    assert result["test_nelbo"] == pytest.approx(sum(result["elbo_terms"].values()), rel=1e-5)
    key = "eta=0.5,guidance=2.0,sampler=ddim,steps=5"
    assert result["sampling"][key]["how"]["guidance"] == 2.0 and "modes" in result["sampling"][key]
    capsys.readouterr()
    cases = {
        ("--class", "8"): "out of range",
        ("--sampler", "ddm"): "did you mean",
        ("--steps", "21"): "more than the model's T = 20",
        ("--eta", "0.3"): "eta is for the ddim sampler",
    }
    for argv, message in cases.items():
        assert main(["sample", str(run), "-n", "4", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_classifier_guidance_loads_a_matching_classifier_run_and_refuses_a_mismatched_one(tmp_path):
    from genbits import load_config
    from genbits.registry import MODELS
    from genbits.train import train

    classifier = {"name": "noisy-classifier", "channels": 8, "multipliers": [1], "head_dim": 8, "steps": 30}
    config = {"data": "digits", "model": classifier, "objective": "noisy-classification"}
    train(load_config(config | {"train": {"steps": 1, "batch_size": 8, "sample_every": 0}}), tmp_path, progress=False)
    digits = {"event_shape": (1, 8, 8), "num_classes": 10, "dataset": None}
    unet = {"net": "unet", "net_options": {"channels": 8, "multipliers": [1], "head_dim": 8}}
    model = MODELS.build("diffusion", {**unet, "steps": 30, "conditional": True}, **digits)
    y = torch.arange(4)
    how = {"sampler": "ddim", "steps": 3, "classifier": str(tmp_path)}
    plain = model.sample(4, y, torch.Generator().manual_seed(0), sampler="ddim", steps=3)
    guided = model.sample(4, y, torch.Generator().manual_seed(0), guidance=5.0, **how)
    assert guided.shape == (4, 1, 8, 8) and not torch.equal(plain, guided)
    assert torch.equal(plain, model.sample(4, y, torch.Generator().manual_seed(0), guidance=0.0, **how))
    unconditional = MODELS.build("diffusion", {**unet, "steps": 30}, **digits)  # a classifier guides it too
    assert unconditional.sample(3, None, guidance=1.0, **how).shape == (3, 1, 8, 8)
    mismatched = {
        "another noise schedule": MODELS.build("diffusion", {**unet, "steps": 40}, **digits),
        r"classifies \(1, 8, 8\) inputs": MODELS.build("diffusion", {"steps": 30}, event_shape=(2,)),
        "has 10 classes, this model 3": MODELS.build(
            "diffusion", {"steps": 30, "conditional": True}, event_shape=(1, 8, 8), num_classes=3
        ),
    }
    for message, other in mismatched.items():
        with pytest.raises(ConfigError, match=message):
            other.sample(2, None, guidance=1.0, **how)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["simple", "snr", "min-snr"])
def test_denoising_weightings_are_x0_errors_weighted_by_their_snr_function(prediction, weighting):
    """Recompute the loss from the same draws through x̂₀ = convert(prediction): simple = the target's own MSE,
    snr = SNR·‖x₀ − x̂₀‖² (the ε-MSE whatever the target), min-snr = min(SNR, γ)·‖x₀ − x̂₀‖² (Hang et al. 2023)."""
    from genbits.data.base import Batch
    from genbits.objectives.denoising import Denoising

    model = diffusion((2,), net_options={"width": 8, "depth": 1}, steps=100, prediction=prediction)
    x = torch.randn(64, 2)
    torch.manual_seed(0)
    loss = Denoising(weighting, gamma=2.0)(model, Batch(x)).per_player["model"]
    torch.manual_seed(0)  # the same draws: t, then ε
    t = model.schedule.sample_t(64)
    alpha_bar = model.schedule.alpha_bar(t)
    eps = torch.randn_like(x)
    x_t = q_sample(x.double(), alpha_bar, eps.double()).float()
    with torch.no_grad():
        pred = model.predict(x_t, t, None).double()
    x0_hat = convert(pred, prediction, "x0", x_t.double(), alpha_bar)
    x0_error = ((x.double() - x0_hat) ** 2).mean(1)
    snr = alpha_bar / (1 - alpha_bar)
    if weighting == "simple":
        target = {
            "eps": eps.double(),
            "x0": x.double(),
            "v": convert(eps.double(), "eps", "v", x_t.double(), alpha_bar),
        }
        expected = ((pred - target[prediction]) ** 2).mean(1).mean()
    else:
        expected = ((snr if weighting == "snr" else snr.clamp(max=2.0)) * x0_error).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-3)


def test_p_uncond_drops_labels_to_the_null_class_at_its_rate():
    from genbits.data.base import Batch
    from genbits.objectives.denoising import Denoising

    model = diffusion((2,), num_classes=4, conditional=True, net_options={"width": 8, "depth": 1}, steps=10)
    seen = []
    model.net.register_forward_hook(lambda module, args, out: seen.append(args[2]))
    torch.manual_seed(0)
    Denoising(p_uncond=0.3)(model, Batch(torch.randn(4000, 2), torch.randint(0, 4, (4000,))))
    null = (seen[0] == 4).float().mean().item()
    assert null == pytest.approx(0.3, abs=0.03)  # se ≈ 0.007
    seen.clear()
    Denoising(p_uncond=0.0)(model, Batch(torch.randn(100, 2), torch.randint(0, 4, (100,))))
    assert (seen[0] < 4).all()


class WildNet(torch.nn.Module):
    """A denoiser 20% off the noise it should predict (ε̂ = 1.2 x_t): its x̂₀ leaves [−1, 1] at high noise."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, noise, y):
        return 1.2 * x


def test_image_samples_clip_the_data_prediction_by_default_and_continuous_ones_refuse_to():
    image = Diffusion(WildNet(), DiscreteSchedule.cosine(100), "eps", (1, 4, 4), levels=17)
    for sampler in ("ddim", "dpm-solver++"):
        how = dict(sampler=sampler, steps=10)
        clipped = image.sample(64, None, torch.Generator().manual_seed(0), **how)
        assert clipped.min() >= 0 and clipped.max() <= 1
        wild = image.sample(64, None, torch.Generator().manual_seed(0), clip=False, **how)
        assert wild.abs().max() > 10
    with pytest.raises(ConfigError, match="clip must be true or false"):
        image.sample(2, clip="yes")
    with pytest.raises(ConfigError, match="not images"):
        tiny().sample(2, clip=True)
    assert tiny().sample(2, sampler="ddim", steps=3, clip=False).shape == (2, 2)
