"""The VAE and its objectives against independent references.

The reference model is probabilistic PCA (Tipping & Bishop 1999): z ~ N(0, I), x | z ~ N(Wz + μ, σ²I). Its
likelihood is closed form, x ~ N(μ, WWᵀ + σ²I), and so is its posterior, z | x ~ N(M⁻¹Wᵀ(x − μ), σ²M⁻¹) with
M = WᵀW + σ²I; with orthogonal columns of W that posterior is diagonal, so a VAE with linear nets (``depth=0``), a
Gaussian likelihood of fixed σ and a diagonal Gaussian posterior contains both the true model and its posterior.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from genbits import load_config
from genbits.data import build_dataset
from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.metrics.latent import importance_sampled
from genbits.models.latent import ElboParts, kl_diagonal_normals
from genbits.models.vae import LOG_SCALE_BOUND, VAE
from genbits.objectives.base import Progress
from genbits.objectives.elbo import Elbo, Iwae, balancing_weights
from genbits.registry import MODELS, OBJECTIVES
from genbits.runs import load_run
from genbits.runs.evaluate import evaluate
from genbits.train import train

DATA, LATENT, SIGMA = 4, 2, 0.5
CONTINUOUS = SimpleNamespace(levels=None)


def ppca() -> tuple[VAE, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear VAE set to a pPCA model and its exact posterior; returns it with W, μ, M⁻¹Wᵀ and log σ_post."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(DATA, LATENT, generator=g, dtype=torch.float64))
    w = q * torch.tensor([2.0, 0.7], dtype=torch.float64)  # orthogonal columns: a diagonal true posterior
    mu = torch.randn(DATA, generator=g, dtype=torch.float64)
    model = MODELS.build(
        "vae",
        {"latent": LATENT, "depth": 0, "likelihood": "gaussian", "scale": SIGMA},
        event_shape=(DATA,),
        num_classes=None,
        dataset=CONTINUOUS,
    ).double()
    m = w.T @ w + SIGMA**2 * torch.eye(LATENT, dtype=torch.float64)
    gain = torch.linalg.solve(m, w.T)  # (LATENT, DATA)
    log_scale = 0.5 * torch.log(SIGMA**2 / torch.diagonal(m))
    with torch.no_grad():
        model.decoder.out.weight.copy_(w)
        model.decoder.out.bias.copy_(mu)
        head = model.posterior_head
        head.weight.zero_()
        head.weight[:LATENT].copy_(gain)
        head.bias[:LATENT].copy_(-gain @ mu)
        head.bias[LATENT:].copy_(LOG_SCALE_BOUND * torch.atanh(log_scale / LOG_SCALE_BOUND))  # undo the soft clamp
    return model, w, mu, gain, log_scale


def exact_log_prob(w: torch.Tensor, mu: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    cov = w @ w.T + SIGMA**2 * torch.eye(DATA, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(mu, cov).log_prob(x)


def data(w: torch.Tensor, mu: torch.Tensor, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, LATENT, generator=g, dtype=torch.float64)
    return z @ w.T + mu + SIGMA * torch.randn(n, DATA, generator=g, dtype=torch.float64)


def perturb(model: VAE) -> None:
    """A worse posterior: means shrunk, scales widened (the bounds are then strict)."""
    with torch.no_grad():
        model.posterior_head.weight[:LATENT].mul_(0.6)
        model.posterior_head.bias[LATENT:].add_(0.6)


def test_with_the_true_posterior_every_importance_weight_is_the_exact_likelihood():
    """log p(x, z) − log q(z | x) = log p(x) for every z when q is the true posterior: ELBO = IWAE = log p(x)."""
    model, w, mu, _, _ = ppca()
    x = data(w, mu, 16)
    torch.manual_seed(0)
    weights = model.log_weights(x, k=50)
    torch.testing.assert_close(weights, exact_log_prob(w, mu, x).expand(50, -1), rtol=0, atol=1e-10)


def test_the_elbo_is_the_likelihood_minus_the_posterior_kl():
    """E_q[log w] = log p(x) − KL(q ‖ p(z | x)), the KL between diagonal Gaussians in closed form."""
    model, w, mu, gain, log_scale = ppca()
    perturb(model)
    x = data(w, mu, 8)
    torch.manual_seed(1)
    weights = model.log_weights(x, k=20000)
    loc_q, log_scale_q = model.posterior(x)
    true_loc = (x - mu) @ gain.T
    gap = kl_diagonal_normals(loc_q, log_scale_q, true_loc, log_scale.expand_as(true_loc)).sum(-1)
    expected = exact_log_prob(w, mu, x) - gap
    stderr = weights.std(0) / math.sqrt(len(weights))
    assert (gap > 0.1).all()
    assert ((weights.mean(0) - expected).abs() < 5 * stderr).all(), (weights.mean(0) - expected) / stderr
    with torch.no_grad():
        elbo = model.elbo(x.repeat(4000, 1)).reshape(4000, len(x))  # the analytic-KL estimator, same expectation
    assert ((elbo.mean(0) - expected).abs() < 5 * elbo.std(0) / math.sqrt(len(elbo))).all()


def test_iwae_rises_with_k_towards_the_exact_likelihood():
    model, w, mu, _, _ = ppca()
    perturb(model)
    x = data(w, mu, 256)
    exact = exact_log_prob(w, mu, x).mean().item()
    torch.manual_seed(2)
    with torch.no_grad():
        bounds = {k: model.iwae(x, k) for k in (1, 10, 100, 1000)}
    means = {k: b.mean().item() for k, b in bounds.items()}
    ks = sorted(means)
    for small, large in zip(ks, ks[1:], strict=False):
        rise = bounds[large] - bounds[small]  # paired on the same x
        assert rise.mean() > 3 * rise.std() / math.sqrt(len(rise)), means
    shortfall = exact_log_prob(w, mu, x) - bounds[1000]
    assert shortfall.mean() > -3 * shortfall.std() / math.sqrt(len(shortfall))
    assert exact - means[1000] < 0.05 * (exact - means[1]), (exact, means)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_the_encoder_on_the_elbo_reaches_the_exact_likelihood(seed):
    """The posterior family contains the true posterior, so the optimal ELBO is log p(x) (the two tests above show
    it exactly); here gradient ascent on the ``elbo`` objective, decoder fixed at the truth, gets there from a random
    encoder: the gap (a KL to the true posterior, so ≥ 0) falls by over 98% to under 0.02 nats."""
    torch.manual_seed(seed)
    model, w, mu, _, _ = ppca()
    with torch.no_grad():
        model.posterior_head.weight.normal_(0, 0.3)
        model.posterior_head.bias.zero_()
    x = data(w, mu, 256)
    exact = exact_log_prob(w, mu, x).mean().item()
    with torch.no_grad():
        start = exact - model.log_weights(x, k=200).mean().item()
    optimizer = torch.optim.Adam(model.posterior_head.parameters(), lr=0.05)
    for step in range(600):
        if step == 300:
            optimizer.param_groups[0]["lr"] = 0.005
        optimizer.zero_grad()
        Elbo()(model, Batch(x.repeat(4, 1))).per_player["model"].backward()
        optimizer.step()
    with torch.no_grad():
        gap = exact - model.log_weights(x, k=200).mean().item()
    assert gap < 0.02 and gap < 0.02 * start, (start, gap)


def test_the_flow_posterior_density_is_the_change_of_variables():
    """log q(z) = log N(T⁻¹(z); μ, σ²) − log |det ∂T/∂z₀| with the Jacobian from autograd."""
    torch.manual_seed(4)
    model = MODELS.build(
        "vae",
        {"latent": 3, "width": 8, "depth": 1, "posterior": "flow", "flow_layers": 2},
        event_shape=(DATA,),
        num_classes=None,
        dataset=CONTINUOUS,
    ).double()
    model.eval()
    with torch.no_grad():
        for p in model.posterior_flow.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the identity the flow starts at
    x = torch.randn(5, DATA, dtype=torch.float64)
    z, log_q, loc, log_scale = model.rsample_posterior(x, 1)
    for i in range(len(x)):
        z0, _ = model.posterior_flow.inverse(z[0, i : i + 1])
        jac = torch.autograd.functional.jacobian(lambda v: model.posterior_flow(v.unsqueeze(0))[0][0], z0[0])
        base = torch.distributions.Normal(loc[i], log_scale[i].exp()).log_prob(z0[0]).sum()
        torch.testing.assert_close(log_q[0, i], base - torch.linalg.slogdet(jac)[1], rtol=1e-8, atol=1e-8)


def test_vampprior_is_the_mean_of_the_pseudo_input_posteriors():
    torch.manual_seed(5)
    model = MODELS.build(
        "vae",
        {"latent": 2, "width": 8, "depth": 1, "prior": "vamp", "pseudo_inputs": 3},
        event_shape=(DATA,),
        num_classes=None,
        dataset=CONTINUOUS,
    )
    z = torch.randn(7, 2)
    loc, log_scale = model.posterior(model.pseudo_inputs)
    mixture = torch.stack(
        [torch.distributions.Normal(loc[k], log_scale[k].exp()).log_prob(z).sum(-1) for k in range(3)]
    )
    torch.testing.assert_close(model.prior_log_prob(z), mixture.exp().mean(0).log())


# ----------------------------------------------------------------------------------------------------
# The objective's knobs, on a stub model whose parts are known tensors.


class Parts(torch.nn.Module):
    def __init__(self, reconstruction: torch.Tensor, kl: dict[str, torch.Tensor], penalty: float | None = None):
        super().__init__()
        self.reconstruction = torch.nn.Parameter(reconstruction)
        self.kl = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in kl.items()})
        self.penalty = penalty

    def elbo_parts(self, x: torch.Tensor, y: torch.Tensor | None = None, noise=None) -> ElboParts:
        return ElboParts(self.reconstruction, dict(self.kl))


class Penalized(Parts):
    def regularization(self) -> torch.Tensor:
        return torch.tensor(self.penalty)


def test_elbo_objective_warmup_free_bits_and_balancing():
    kl = {"top": torch.tensor([[0.5, 0.01], [0.3, 0.03]]), "bottom": torch.tensor([2.0, 4.0])}
    model = Parts(torch.tensor([-10.0, -12.0]), kl)
    batch = Batch(torch.zeros(2, 1))
    objective = Elbo(beta=2.0, warmup=0.5, free_bits=0.1)
    objective.progress = Progress(25, 100)  # halfway through the warm-up: β_t = 2 · 0.5
    losses = objective(model, batch)
    penalized = (0.4 + 0.1) + 3.0  # unit means 0.4 and 0.02 → clamped to 0.1; the (B,) group as one
    assert losses.per_player["model"].item() == pytest.approx(11.0 + 1.0 * penalized)
    assert losses.metrics["elbo"].item() == pytest.approx(-11.0 - (0.42 + 3.0))
    losses.per_player["model"].backward()
    assert model.kl["top"].grad[:, 1].abs().max() == 0, "a unit under its free bits gets no KL gradient"
    weights = balancing_weights({"a": torch.tensor([1.0]), "b": torch.tensor([3.0])}, {"a": 1, "b": 2})
    assert (weights["a"] + weights["b"]).item() == pytest.approx(2.0)
    assert weights["a"].item() / weights["b"].item() == pytest.approx((1.01 / 1) / (3.01 / 2))
    balanced = Elbo(kl_balancing=True, warmup=0.5)
    balanced.progress = Progress(10, 100)
    plain = Elbo(warmup=0.5)
    plain.progress = Progress(10, 100)
    assert balanced(model, batch).per_player["model"] != plain(model, batch).per_player["model"]
    balanced.progress = plain.progress = Progress(80, 100)  # β_t = 1: balancing is off
    assert balanced(model, batch).per_player["model"] == plain(model, batch).per_player["model"]


def test_the_objectives_add_the_model_regularization():
    model = Penalized(torch.tensor([-1.0]), {"z": torch.tensor([0.5])}, penalty=0.25)
    losses = Elbo()(model, Batch(torch.zeros(1, 1)))
    assert losses.per_player["model"].item() == pytest.approx(1.5 + 0.25)
    assert losses.metrics["regularization"].item() == pytest.approx(0.25)


def test_the_stream_noise_gives_each_example_its_own_draws_however_the_batch_is_split():
    """With the batch's ExampleNoise, an example's k posterior draws do not depend on the shard that holds it, and
    its k draws differ: the IWAE objective under DDP is the full batch's."""
    from genbits.train.stream import BatchStream

    data = build_dataset("digits", {"binarize": True})
    model = MODELS.build(
        "vae", {"latent": 3, "width": 16, "likelihood": "bernoulli"}, event_shape=(1, 8, 8), dataset=data
    )
    batch = next(BatchStream(data, 8, seed=0))
    with torch.no_grad():
        whole = model.log_weights(batch.x, k=3, noise=batch.noise)
        halves = [model.log_weights(batch.x[i], k=3, noise=batch.noise[i]) for i in (slice(0, 5), slice(5, 8))]
    torch.testing.assert_close(torch.cat(halves, 1), whole)
    assert (whole[0] != whole[1]).all()


def test_iwae_objective_is_log_mean_exp_of_the_weights():
    """At k = 1 the IWAE loss is −mean log w (an ELBO estimate); at k it is −mean log (1/k) Σ w_i, by hand."""
    model, w, mu, _, _ = ppca()
    perturb(model)
    x = data(w, mu, 8)
    for k in (1, 7):
        torch.manual_seed(6)
        loss = Iwae(k)(model, Batch(x)).per_player["model"]
        torch.manual_seed(6)
        weights = model.log_weights(x, k=k)
        by_hand = -(weights.exp().mean(0).log()).mean()
        torch.testing.assert_close(loss, by_hand)


# ----------------------------------------------------------------------------------------------------
# Data and bad input.


def test_binarized_digits_are_dynamic_on_train_and_fixed_on_test():
    train = build_dataset("digits", {"binarize": True})
    assert train.levels == 2
    index = torch.arange(200)
    one, two = (train.get(index, torch.Generator().manual_seed(s)).x for s in (0, 1))
    assert set(one.unique().tolist()) <= {0.0, 1.0} and not torch.equal(one, two)
    draws = torch.stack([train.get(index, torch.Generator().manual_seed(s)).x for s in range(50)]).mean(0)
    assert (draws - train.x[index]).abs().mean() < 0.04  # pixels are Bernoulli(grey): ≈ 0.02 expected
    a, b = (build_dataset("digits", {"binarize": True}, split="test", seed=s) for s in (0, 7))
    assert torch.equal(a.x, b.x) and set(a.x.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    ("data", "model", "message"),
    [
        ({"binarize": True}, {"likelihood": "logistic-mixture"}, "needs grey-level data; the data are binarized"),
        ({}, {"likelihood": "bernoulli"}, "needs binarized data"),
        ({}, {"latent": 0}, "latent must be >= 1"),
        ({}, {"likelihood": "gaussian", "arch": "conv", "width": 2, "prior": "vamp", "pseudo_inputs": 0}, "pseudo"),
    ],
)
def test_bad_vae_settings_are_one_line_config_errors(data, model, message):
    dataset = build_dataset("digits", data)
    with pytest.raises(ConfigError, match=message) as error:
        MODELS.build("vae", model, "model", event_shape=dataset.event_shape, num_classes=None, dataset=dataset)
    assert "\n" not in str(error.value)


def test_iwae_with_k_0_is_a_config_error():
    with pytest.raises(ConfigError, match="k .* must be >= 1"):
        OBJECTIVES.build("iwae", {"k": 0}, "objective", dataset=None)


# ----------------------------------------------------------------------------------------------------
# Evaluation.


def test_the_importance_sampled_estimate_converges_to_the_exact_likelihood_within_its_error():
    """K = 5,000 in chunks of 2,048 decoder passes: the estimate sits within its Monte Carlo error of log p(x)."""
    model, w, mu, _, _ = ppca()
    perturb(model)
    x = data(w, mu, 64)
    torch.manual_seed(7)
    estimate, error = importance_sampled(model, x, 5000, evaluations=2048)
    exact = exact_log_prob(w, mu, x)
    z = (estimate - exact) / error
    assert (z.abs() < 4).all(), z
    assert abs(z.mean()) < 4 / math.sqrt(len(z))  # no bias beyond the noise (the O(1/K) bias is below it here)
    one, _ = importance_sampled(model, x, 1)
    assert (exact - one).mean() > 10 * (exact - estimate).abs().mean()


def test_vae_eval_reports_importance_sampled_nll_iwae_and_active_units(tmp_path):
    config = load_config(
        {
            "data": {"name": "digits", "binarize": True},
            "model": {"name": "vae", "latent": 3, "width": 16, "depth": 1, "likelihood": "bernoulli"},
            "objective": "elbo",
            "train": {"steps": 2, "batch_size": 16, "sample_every": None, "ema_decay": 0.0},
        }
    )
    train(config, tmp_path, progress=False)
    run = load_run(tmp_path)
    result = evaluate(run, 8, ["nll", "iwae", "kl"], importance_samples=50, iwae_k=5)
    assert result["importance_samples"] == 50 and result["iwae_k"] == 5
    assert result["bits_per_dim"] == pytest.approx(result["test_nll"] / (64 * math.log(2)))
    assert result["test_nll"] <= result["iwae_nll"] + 3 * result["iwae_nll_stderr"]  # more samples, tighter
    assert len(result["kl_per_unit"]["z"]) == 3 and 0 <= result["active_units"] <= result["latent_units"] == 3
    assert evaluate(run, 8, ["nll"], importance_samples=50) == evaluate(run, 8, ["nll"], importance_samples=50)
    elbo = evaluate(run, 8, ["elbo"])  # the generic bound of any LatentVariable, with the VAE's terms
    assert set(elbo["elbo_terms"]) == {"reconstruction", "kl/z"}
    assert elbo["test_nelbo"] == pytest.approx(sum(elbo["elbo_terms"].values()))
    with pytest.raises(ConfigError, match="--importance-samples: .* must be >= 1, got 0"):
        evaluate(run, 8, ["nll"], importance_samples=0)
    with pytest.raises(ConfigError, match="--iwae-k: .* must be >= 1, got 0"):
        evaluate(run, 8, ["iwae"], iwae_k=0)


def test_nll_of_a_model_without_an_encoder_is_a_config_error(tmp_path):
    config = load_config(
        {
            "data": "ring",
            "model": {"name": "gan", "arch": "mlp", "width": 8, "depth": 1, "latent": 2},
            "objective": "gan",
            "train": {"steps": 1, "batch_size": 8, "sample_every": None, "ema_decay": 0.0},
        }
    )
    train(config, tmp_path, progress=False)
    for metric in ("nll", "iwae"):
        with pytest.raises(ConfigError, match=f"{metric!r} needs a density model or a latent model with an encoder"):
            evaluate(load_run(tmp_path), 8, [metric])


def test_elbo_terms_are_losses_that_sum_to_minus_the_elbo():
    model, w, mu, _, _ = ppca()
    x = data(w, mu, 6)
    torch.manual_seed(8)
    terms = model.elbo_terms(x)
    torch.manual_seed(8)
    torch.testing.assert_close(sum(terms.values()), -model.elbo(x))
    assert set(terms) == {"reconstruction", "kl/z"} and (terms["kl/z"] >= 0).all()


@pytest.mark.parametrize(
    ("data", "options", "objective"),
    [
        ({"binarize": True}, {"arch": "conv", "width": 4, "likelihood": "bernoulli", "posterior": "flow"}, Elbo()),
        ({}, {"likelihood": "logistic-mixture", "components": 2, "prior": "vamp", "pseudo_inputs": 3}, Iwae(3)),
        ({}, {"likelihood": "gaussian", "prior": "flow", "norm": "layer", "activation": "swish"}, Elbo(beta=0.5)),
    ],
)
def test_every_vae_parameter_gets_a_gradient(data, options, objective):
    torch.manual_seed(9)
    dataset = build_dataset("digits", data)
    model = MODELS.build(
        "vae",
        {"latent": 2, "width": 8, "depth": 1, **options},
        event_shape=(1, 8, 8),
        num_classes=None,
        dataset=dataset,
    )
    batch = dataset.get(torch.arange(16), torch.Generator().manual_seed(0))
    objective(model, batch).per_player["model"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_without_free_bits_a_negative_kl_estimate_still_trains_the_prior():
    """A one-sample KL estimate log q − log p can average below 0 on a batch; clamping it at 0 would cut the
    gradient to a flow prior."""
    model = Parts(torch.tensor([-1.0, -1.0]), {"z": torch.tensor([-0.3, 0.1])})
    Elbo()(model, Batch(torch.zeros(2, 1))).per_player["model"].backward()
    assert (model.kl["z"].grad != 0).all()
