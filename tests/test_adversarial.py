"""Adversarial objectives against independent references: hand-computed loss values, gradient behaviour, the f-GAN
table (Fenchel–Young, domains, variational bound by quadrature vs closed forms), gradient penalties on linear
critics, and the registered ``gan`` objective on a tiny model."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from scipy import integrate
from scipy.stats import norm
from torch import Tensor, nn

from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.objectives.adversarial import (
    F_DIVERGENCES,
    LSGAN_CODINGS,
    Divergence,
    f_gan_loss,
    gradient_penalty,
    hinge_loss,
    least_squares_loss,
    minimax_loss,
    mmd_loss,
    mmd_witness,
    non_saturating_loss,
    r1_penalty,
    r2_penalty,
    wasserstein_loss,
)
from genbits.registry import OBJECTIVES

REAL = [1.0, -2.0, 0.5]
FAKE = [0.5, -1.0]


def t(values: list[float], grad: bool = False) -> Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ---------------------------------------------------------------- values by hand


def test_minimax_and_non_saturating_values() -> None:
    # D maximizes E log σ(D(x)) + E log(1 − σ(D(G z))); written out with log and σ, not softplus.
    expected_d = -mean([math.log(sigmoid(v)) for v in REAL]) - mean([math.log(1 - sigmoid(v)) for v in FAKE])
    d, g = minimax_loss(t(REAL), t(FAKE))
    assert float(d) == pytest.approx(expected_d, rel=1e-12)
    assert float(g) == pytest.approx(mean([math.log(1 - sigmoid(v)) for v in FAKE]), rel=1e-12)
    d, g = non_saturating_loss(t(REAL), t(FAKE))
    assert float(d) == pytest.approx(expected_d, rel=1e-12)
    assert float(g) == pytest.approx(-mean([math.log(sigmoid(v)) for v in FAKE]), rel=1e-12)


def test_hinge_values() -> None:
    d, g = hinge_loss(t(REAL), t(FAKE))
    # relu(1 − [1, −2, 0.5]) = [0, 3, 0.5]; relu(1 + [0.5, −1]) = [1.5, 0]
    assert float(d) == pytest.approx(3.5 / 3 + 1.5 / 2)
    assert float(g) == pytest.approx(0.25)


@pytest.mark.parametrize("coding", list(LSGAN_CODINGS))
def test_least_squares_values(coding: str) -> None:
    a, b, c = {"0-1-1": (0, 1, 1), "-1-1-0": (-1, 1, 0)}[coding]
    assert LSGAN_CODINGS[coding] == (a, b, c)
    d, g = least_squares_loss(t(REAL), t(FAKE), *LSGAN_CODINGS[coding])
    assert float(d) == pytest.approx(
        0.5 * mean([(v - b) ** 2 for v in REAL]) + 0.5 * mean([(v - a) ** 2 for v in FAKE])
    )
    assert float(g) == pytest.approx(0.5 * mean([(v - c) ** 2 for v in FAKE]))


def test_least_squares_default_coding_is_0_1_1() -> None:
    assert least_squares_loss(t(REAL), t(FAKE)) == least_squares_loss(t(REAL), t(FAKE), 0.0, 1.0, 1.0)
    # (0, 1, 1) on these numbers: ½·mean([0, 9, 0.25]) + ½·mean([0.25, 1]); ½·mean([0.25, 4])
    d, g = least_squares_loss(t(REAL), t(FAKE))
    assert float(d) == pytest.approx(0.5 * 9.25 / 3 + 0.5 * 1.25 / 2)
    assert float(g) == pytest.approx(0.5 * 4.25 / 2)


def test_wasserstein_values() -> None:
    d, g = wasserstein_loss(t(REAL), t(FAKE))
    assert float(d) == pytest.approx(-0.25 - (-0.5 / 3))
    assert float(g) == pytest.approx(0.25)


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
@pytest.mark.parametrize("generator", ["saddle", "non-saturating"])
def test_f_gan_values(name: str, generator: str) -> None:
    g_f, f_star = ACTIVATION[name], CONJUGATE[name]
    d, g = f_gan_loss(t(REAL), t(FAKE), name, generator)
    assert float(d) == pytest.approx(-(mean([g_f(v) for v in REAL]) - mean([f_star(g_f(v)) for v in FAKE])), rel=1e-10)
    expected_g = -mean([f_star(g_f(v)) for v in FAKE]) if generator == "saddle" else -mean([g_f(v) for v in FAKE])
    assert float(g) == pytest.approx(expected_g, rel=1e-10)


def test_f_gan_gan_row_is_the_standard_gan() -> None:
    assert torch.allclose(
        torch.stack(f_gan_loss(t(REAL), t(FAKE), "gan", "saddle")), torch.stack(minimax_loss(t(REAL), t(FAKE)))
    )
    assert torch.allclose(
        torch.stack(f_gan_loss(t(REAL), t(FAKE), "gan", "non-saturating")),
        torch.stack(non_saturating_loss(t(REAL), t(FAKE))),
    )


def test_f_gan_rejects_unknown_generator_loss() -> None:
    with pytest.raises(ValueError, match="generator_loss"):
        f_gan_loss(t(REAL), t(FAKE), "kl", "other")


# ---------------------------------------------------------------- gradient behaviour


def grads(loss_fn, real: list[float], fake: list[float]) -> tuple[Tensor, Tensor, Tensor]:
    """(∂L_D/∂D(real), ∂L_D/∂D(fake), ∂L_G/∂D(fake))."""
    r, f = t(real, grad=True), t(fake, grad=True)
    loss_d, loss_g = loss_fn(r, f)
    gr, gf = torch.autograd.grad(loss_d, (r, f))
    (gg,) = torch.autograd.grad(loss_g, f)
    return gr, gf, gg


@pytest.mark.parametrize(
    "loss_fn", [minimax_loss, non_saturating_loss, hinge_loss, least_squares_loss, wasserstein_loss]
)
def test_discriminator_pushes_real_up_and_fake_down_and_generator_pushes_fake_up(loss_fn) -> None:
    gr, gf, gg = grads(loss_fn, [0.3, -0.2], [0.1, 0.4])  # inside the hinge margin, fakes between LS a=0 and c=1
    assert (gr < 0).all() and (gf > 0).all() and (gg < 0).all()


def test_non_saturating_generator_gradient_survives_where_minimax_vanishes() -> None:
    _, _, mm = grads(minimax_loss, [5.0], [-12.0])
    _, _, ns = grads(non_saturating_loss, [5.0], [-12.0])
    assert mm.item() < 0 and abs(mm.item()) < 1e-5  # −σ(−12)
    assert ns.item() == pytest.approx(-1.0, abs=1e-5)  # −σ(12)


def test_hinge_discriminator_stops_outside_the_margin() -> None:
    gr, gf, gg = grads(hinge_loss, [1.5, 2.0], [-1.5, -3.0])
    assert (gr == 0).all() and (gf == 0).all()
    assert torch.allclose(gg, torch.full((2,), -0.5, dtype=torch.float64))  # −1/B, independent of D


def test_least_squares_generator_gradient_is_linear_in_distance_to_c() -> None:
    _, _, gg = grads(least_squares_loss, [0.0], [-10.0])
    assert gg.item() == pytest.approx(-11.0)  # (D − c) with c = 1: does not saturate far away
    _, _, gg = grads(least_squares_loss, [0.0], [1.0])
    assert gg.item() == 0.0
    _, _, gg = grads(lambda r, f: least_squares_loss(r, f, -1.0, 1.0, 0.0), [0.0], [2.0])
    assert gg.item() == pytest.approx(2.0)  # above c = 0: G pushes D(fake) down


def test_wasserstein_gradients_are_constant() -> None:
    gr, gf, gg = grads(wasserstein_loss, [100.0, -3.0], [7.0, -50.0])
    assert torch.allclose(gr, torch.full((2,), -0.5, dtype=torch.float64))
    assert torch.allclose(gf, torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.allclose(gg, torch.full((2,), -0.5, dtype=torch.float64))


# ---------------------------------------------------------------- the f-GAN table (independent scalar references)

ACTIVATION = {
    "kl": lambda v: v,
    "reverse-kl": lambda v: -math.exp(-v),
    "pearson": lambda v: v,
    "squared-hellinger": lambda v: 1 - math.exp(-v),
    "js": lambda v: math.log(2) - math.log1p(math.exp(-v)),
    "gan": lambda v: -math.log1p(math.exp(-v)),
}
CONJUGATE = {
    "kl": lambda s: math.exp(s - 1),
    "reverse-kl": lambda s: -1 - math.log(-s),
    "pearson": lambda s: s * s / 4 + s,
    "squared-hellinger": lambda s: s / (1 - s),
    "js": lambda s: -math.log(2 - math.exp(s)),
    "gan": lambda s: -math.log(1 - math.exp(s)),
}
F_PRIME = {  # f'(u), by hand
    "kl": lambda u: math.log(u) + 1,
    "reverse-kl": lambda u: -1 / u,
    "pearson": lambda u: 2 * (u - 1),
    "squared-hellinger": lambda u: 1 - 1 / math.sqrt(u),
    "js": lambda u: math.log(2 * u / (1 + u)),
    "gan": lambda u: math.log(u / (1 + u)),
}
DOMAIN_SUP = {  # dom f* = (−∞, sup)
    "kl": math.inf,
    "reverse-kl": 0.0,
    "pearson": math.inf,
    "squared-hellinger": 1.0,
    "js": math.log(2),
    "gan": 0.0,
}


def test_table_matches_the_divergence_option() -> None:
    assert set(F_DIVERGENCES) == set(get_args(Divergence)) == set(ACTIVATION)


def domain_grid(name: str) -> Tensor:
    sup = DOMAIN_SUP[name]
    if math.isinf(sup):
        return torch.linspace(-6.0, 6.0, 61, dtype=torch.float64)
    return sup - torch.logspace(-6, 1.5, 61, dtype=torch.float64)


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_fenchel_young_inequality_and_equality_at_f_prime(name: str) -> None:
    div = F_DIVERGENCES[name]
    u = torch.logspace(-3, 3, 41, dtype=torch.float64)[:, None]
    s = domain_grid(name)[None, :]
    gap = div.f(u) + div.conjugate(s) - u * s
    assert (gap >= -1e-9).all()
    t_star = torch.tensor([F_PRIME[name](float(x)) for x in u[:, 0]], dtype=torch.float64)
    tight = div.f(u[:, 0]) + div.conjugate(t_star) - u[:, 0] * t_star
    assert torch.allclose(tight, torch.zeros_like(tight), atol=1e-8)


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_table_functions_match_the_hand_written_ones(name: str) -> None:
    div = F_DIVERGENCES[name]
    v = torch.linspace(-4.0, 4.0, 17, dtype=torch.float64)
    assert torch.allclose(div.activation(v), torch.tensor([ACTIVATION[name](float(x)) for x in v], dtype=v.dtype))
    s = domain_grid(name)
    assert torch.allclose(div.conjugate(s), torch.tensor([CONJUGATE[name](float(x)) for x in s], dtype=v.dtype))
    # the stable composition equals f*∘g_f
    assert torch.allclose(div.conjugate_activation(v), div.conjugate(div.activation(v)))


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_activation_maps_reals_into_the_conjugate_domain(name: str) -> None:
    div = F_DIVERGENCES[name]
    v = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64)
    out = div.activation(v)
    assert torch.isfinite(out).all() and (out < DOMAIN_SUP[name]).all()
    assert torch.isfinite(div.conjugate_activation(v)).all()
    # float32, extreme critic values: the loss stays finite (no log 0 in the saturating rows)
    d, g = f_gan_loss(torch.tensor([-40.0, 40.0]), torch.tensor([-40.0, 40.0]), name, "saddle")
    assert torch.isfinite(d) and torch.isfinite(g)


P, Q = norm(0.0, 1.0), norm(1.0, 1.5)
LO, HI = -15.0, 15.0  # q's mass outside is < 1e-20


def quad(fn) -> float:
    value, _ = integrate.quad(fn, LO, HI, limit=200, epsabs=1e-13, epsrel=1e-11)
    return value


def kl_gauss(m1: float, s1: float, m2: float, s2: float) -> float:
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def jsd() -> float:
    def half(a, b):
        return lambda x: a.pdf(x) * (a.logpdf(x) - math.log(0.5 * (a.pdf(x) + b.pdf(x))))

    return 0.5 * quad(half(P, Q)) + 0.5 * quad(half(Q, P))


def reference(name: str) -> float:
    """D_f(P‖Q) from closed forms or from a hand-written integrand, not from the table's f."""
    if name == "kl":
        return kl_gauss(0.0, 1.0, 1.0, 1.5)
    if name == "reverse-kl":
        return kl_gauss(1.0, 1.5, 0.0, 1.0)
    if name == "squared-hellinger":  # 2 − 2·Bhattacharyya coefficient
        bc = math.sqrt(2 * 1.0 * 1.5 / (1.0 + 1.5**2)) * math.exp(-((0.0 - 1.0) ** 2) / (4 * (1.0 + 1.5**2)))
        return 2 - 2 * bc
    if name == "pearson":
        return quad(lambda x: (P.pdf(x) - Q.pdf(x)) ** 2 / Q.pdf(x))
    if name == "js":
        return 2 * jsd()
    return 2 * jsd() - math.log(4)


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_variational_bound_at_optimal_critic_equals_divergence(name: str) -> None:
    div = F_DIVERGENCES[name]

    def ratio(x: float) -> float:
        return math.exp(P.logpdf(x) - Q.logpdf(x))

    def f(u: float) -> float:
        return float(div.f(torch.tensor(u, dtype=torch.float64)))

    def f_star(s: float) -> float:
        return float(div.conjugate(torch.tensor(s, dtype=torch.float64)))

    divergence = quad(lambda x: Q.pdf(x) * f(ratio(x)))
    bound = quad(lambda x: P.pdf(x) * F_PRIME[name](ratio(x)) - Q.pdf(x) * f_star(F_PRIME[name](ratio(x))))
    assert bound == pytest.approx(divergence, rel=1e-7, abs=1e-10)
    assert divergence == pytest.approx(reference(name), rel=1e-7, abs=1e-10)


def test_variational_bound_through_the_loss_with_the_inverse_activation() -> None:
    """−L_D at V = g_f⁻¹(T*) on a Monte-Carlo sample estimates KL(P‖Q) (g = identity, so V = T* = 1 + log p/q)."""
    gen = torch.Generator().manual_seed(0)
    x_p = torch.randn(200_000, generator=gen, dtype=torch.float64)
    x_q = 1.0 + 1.5 * torch.randn(200_000, generator=gen, dtype=torch.float64)

    def critic(x: Tensor) -> Tensor:
        log_ratio = torch.from_numpy(P.logpdf(x.numpy()) - Q.logpdf(x.numpy()))
        return 1.0 + log_ratio

    loss_d, _ = f_gan_loss(critic(x_p), critic(x_q), "kl")
    assert float(-loss_d) == pytest.approx(kl_gauss(0.0, 1.0, 1.0, 1.5), abs=0.01)


def test_js_and_gan_rows_follow_specs_conventions() -> None:
    js = reference("js") / 2
    assert 0 < js < math.log(2)
    js_row = quad(lambda x: Q.pdf(x) * float(F_DIVERGENCES["js"].f(torch.tensor(P.pdf(x) / Q.pdf(x)))))
    gan_row = quad(lambda x: Q.pdf(x) * float(F_DIVERGENCES["gan"].f(torch.tensor(P.pdf(x) / Q.pdf(x)))))
    assert js_row == pytest.approx(2 * js, rel=1e-6)
    assert gan_row == pytest.approx(2 * js - math.log(4), rel=1e-6)
    assert float(F_DIVERGENCES["gan"].f(torch.tensor(1.0))) == pytest.approx(-math.log(4))


# ---------------------------------------------------------------- penalties


def linear_critic(w: Tensor):
    return lambda x: x.flatten(1) @ w


@pytest.mark.parametrize("scale", [1.0, 3.0, 0.2])
def test_gradient_penalty_on_a_linear_critic(scale: float) -> None:
    torch.manual_seed(0)
    w = torch.randn(4, dtype=torch.float64)
    w = scale * w / w.norm()
    real, fake = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    gp = gradient_penalty(linear_critic(w), real, fake, weight=10.0)
    assert float(gp) == pytest.approx(10.0 * (scale - 1.0) ** 2, abs=1e-12)


def test_gradient_penalty_interpolates_per_sample_and_is_differentiable() -> None:
    torch.manual_seed(0)
    # D(x) = ½‖x‖²: ∇D(x̂) = x̂ = (1 − ε)·c between real = 0 and fake = c·e, so the norm is (1 − ε)c per sample
    real, fake = torch.zeros(256, 1, 2, 2), torch.zeros(256, 1, 2, 2)
    fake[:, 0, 0, 0] = 4.0
    gp = gradient_penalty(lambda x: 0.5 * x.flatten(1).pow(2).sum(1), real, fake, weight=1.0)
    # E[((1 − ε)·4 − 1)²] over ε ~ U[0, 1] = ∫₀¹ (4s − 1)² ds = 7/3; one shared ε would give a far noisier value
    assert float(gp.detach()) == pytest.approx(7 / 3, rel=0.15)
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    gp = gradient_penalty(linear_critic(w), torch.randn(5, 2), torch.randn(5, 2), weight=2.0)
    (grad,) = torch.autograd.grad(gp, w)
    assert torch.allclose(grad, 2.0 * 2 * (5.0 - 1.0) * w.detach() / 5.0)


def test_r1_and_r2_on_a_linear_critic() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    x = torch.randn(6, 2)
    assert float(r1_penalty(linear_critic(w.detach()), x, gamma=0.5)) == pytest.approx(0.25 * 25.0)
    assert float(r2_penalty(linear_critic(w.detach()), x, gamma=2.0)) == pytest.approx(25.0)
    (grad,) = torch.autograd.grad(r1_penalty(linear_critic(w), x, gamma=1.0), w)  # d/dw ½‖w‖² = w
    assert torch.allclose(grad, w.detach())


def test_r1_is_zero_where_the_critic_is_flat_and_nonnegative() -> None:
    x = torch.randn(6, 3)
    assert float(r1_penalty(lambda y: torch.zeros(y.shape[0]) + 0 * y.sum(1), x, gamma=10.0).detach()) == 0.0
    assert float(r1_penalty(lambda y: torch.tanh(y).sum(1), x, gamma=10.0).detach()) > 0.0


# ---------------------------------------------------------------- the registered objective


class TinyGan(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gen = nn.Linear(2, 3)
        self.disc = nn.Linear(3, 1)

    def sample_latent(self, n: int) -> Tensor:
        return torch.randn(n, 2)

    def generator(self, z: Tensor) -> Tensor:
        return self.gen(z)

    def discriminator(self, x: Tensor) -> Tensor:
        return self.disc(torch.tanh(x)).squeeze(-1)

    def players(self) -> dict[str, nn.Module]:
        return {"generator": self.gen, "discriminator": self.disc}


CONFIGS = [
    ("gan", {}),
    ("gan", {"loss": "minimax"}),
    ("gan", {"loss": "hinge"}),
    ("least-squares", {}),
    ("least-squares", {"coding": "-1-1-0"}),
    ("gan", {"loss": "wgan", "gradient_penalty": 10.0}),
    *(("f-gan", {"divergence": d, "generator_loss": g}) for d in F_DIVERGENCES for g in ("saddle", "non-saturating")),
    ("f-gan", {}),
    ("gan", {"r1": 10.0, "r2": "1.5"}),
    ("least-squares", {"gradient_penalty": 1.0, "r1": 2.0}),
    ("f-gan", {"divergence": "kl", "r2": 0.5}),
]


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=str)
def test_adversarial_objectives_return_both_players_losses(name: str, options: dict) -> None:
    torch.manual_seed(0)
    model = TinyGan()
    objective = OBJECTIVES.build(name, options, dataset=None)
    out = objective(model, Batch(torch.randn(8, 3)))
    assert set(out.per_player) == {"generator", "discriminator"}
    assert all(loss.shape == () and torch.isfinite(loss) for loss in out.per_player.values())
    assert {"d_real", "d_fake"} <= set(out.metrics)
    for key in ("gradient_penalty", "r1", "r2"):
        assert (key in out.metrics) == (float(options.get(key, 0)) > 0)
    # each player's loss reaches its own parameters through the one graph
    for player, module in model.players().items():
        grads_ = torch.autograd.grad(out.per_player[player], list(module.parameters()), retain_graph=True)
        assert any(g.abs().sum() > 0 for g in grads_)
    assert all(math.isfinite(v) for v in out.scalars().values())


def critic_values_and_losses(name: str, options: dict) -> tuple[Tensor, Tensor, Tensor]:
    """(d_real, d_fake, stacked (L_D, L_G)) of one evaluation on TinyGan with fixed seeds."""
    torch.manual_seed(0)
    model, batch = TinyGan(), Batch(torch.randn(8, 3))
    torch.manual_seed(1)
    out = OBJECTIVES.build(name, options, dataset=None)(model, batch)
    return (
        out.metrics["d_real"],
        out.metrics["d_fake"],
        torch.stack([out.per_player["discriminator"], out.per_player["generator"]]),
    )


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    [
        ("gan", {"loss": "hinge"}, hinge_loss),
        ("least-squares", {}, least_squares_loss),
        ("least-squares", {"coding": "-1-1-0"}, lambda r, f: least_squares_loss(r, f, -1.0, 1.0, 0.0)),
        ("f-gan", {"divergence": "kl", "generator_loss": "saddle"}, lambda r, f: f_gan_loss(r, f, "kl", "saddle")),
    ],
    ids=str,
)
def test_each_objective_plays_its_game(name: str, options: dict, reference) -> None:
    """The registered objective's losses are its game's losses on the critic values it saw."""
    torch.manual_seed(0)
    model, batch = TinyGan(), Batch(torch.randn(8, 3))
    torch.manual_seed(1)
    z = model.sample_latent(len(batch))
    d_real, d_fake = model.discriminator(batch.x), model.discriminator(model.generator(z))
    torch.manual_seed(1)
    out = OBJECTIVES.build(name, options, dataset=None)(model, batch)
    expected = torch.stack(reference(d_real, d_fake))
    assert torch.equal(torch.stack([out.per_player["discriminator"], out.per_player["generator"]]), expected)


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("gan", "loss", "hinge"),
        ("least-squares", "coding", "-1-1-0"),
        ("f-gan", "divergence", "kl"),
        ("f-gan", "generator_loss", "saddle"),
    ],
)
def test_every_option_applies(name: str, option: str, value: str) -> None:
    """No option is inert: changing it away from its default changes the losses (no "only with X" options left)."""
    *_, default = critic_values_and_losses(name, {})
    *_, changed = critic_values_and_losses(name, {option: value})
    assert not torch.allclose(default, changed)


def test_gan_objective_adds_penalties_to_the_discriminator_only() -> None:
    torch.manual_seed(0)
    model, batch = TinyGan(), Batch(torch.randn(8, 3))
    torch.manual_seed(1)
    plain = OBJECTIVES.build("gan", {}, dataset=None)(model, batch)
    torch.manual_seed(1)
    penalized = OBJECTIVES.build("gan", {"r1": 4.0}, dataset=None)(model, batch)
    assert torch.allclose(penalized.per_player["generator"], plain.per_player["generator"])
    assert torch.allclose(
        penalized.per_player["discriminator"], plain.per_player["discriminator"] + penalized.metrics["r1"]
    )


@pytest.mark.parametrize(
    ("name", "options", "word"),
    [
        ("gan", {"loss": "vanilla"}, "loss"),
        ("f-gan", {"divergence": "tv"}, "divergence"),
        ("f-gan", {"generator_loss": "minimax"}, "generator_loss"),
        ("least-squares", {"coding": "1-0-1"}, "coding"),
        ("least-squares", {"loss": "hinge"}, "loss"),
        ("gan", {"gradient_penalty": -1.0}, "gradient_penalty"),
        ("least-squares", {"r1": "nan"}, "r1"),
        ("f-gan", {"r2": "a lot"}, "r2"),
        ("gan", {"lambda_gp": 10}, "lambda_gp"),
    ],
)
def test_adversarial_objectives_reject_bad_options(name: str, options: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        OBJECTIVES.build(name, options, dataset=None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"loss": "least-squares"},
            "objective.loss: 'least-squares' is its own objective now: objective.name=least-squares",
        ),
        (
            {"loss": "f-gan", "divergence": "kl"},
            "objective.loss: 'f-gan' is its own objective now: objective.name=f-gan",
        ),
        (
            {"lsgan_coding": "-1-1-0"},
            "objective.lsgan_coding: now the option coding of objective least-squares: "
            "{name: least-squares, coding: …}",
        ),
        ({"divergence": "kl"}, "objective.divergence: now an option of objective f-gan: {name: f-gan, divergence: …}"),
        (
            {"loss": "hinge", "generator_loss": "saddle"},
            "objective.generator_loss: now an option of objective f-gan: {name: f-gan, generator_loss: …}",
        ),
    ],
)
def test_the_old_gan_options_point_to_the_new_objectives(options: dict, message: str) -> None:
    """``{name: gan, loss: least-squares}`` and friends predate least-squares and f-GAN being objectives."""
    from genbits.config import load_config

    with pytest.raises(ConfigError) as error:
        load_config("gan-ring", [f"objective={{name: gan, {', '.join(f'{k}: {v}' for k, v in options.items())}}}"])
    assert str(error.value) == message


def test_the_python_factories_check_their_choices_too() -> None:
    from genbits.objectives.adversarial import f_gan, gan, least_squares

    for call, word in [
        (lambda: gan(loss="least-squares"), "loss"),
        (lambda: least_squares(coding="1-0-1"), "coding"),
        (lambda: f_gan(divergence="tv"), "divergence"),
        (lambda: f_gan(generator_loss="other"), "generator_loss"),
    ]:
        with pytest.raises(ValueError, match=word):
            call()


@pytest.mark.parametrize(
    ("name", "penalty"),
    [
        ("gan", {"loss": "wgan", "gradient_penalty": 0.1}),
        ("gan", {"r1": 1.0}),
        ("gan", {"r2": 1.0}),
        ("least-squares", {"r1": 1.0}),
        ("f-gan", {"divergence": "kl", "r2": 1.0}),
        ("mmd-gan", {"gradient_penalty": 1.0}),
    ],
)
def test_penalized_gans_train_through_the_loop(tmp_path, name: str, penalty: dict) -> None:
    """The loop's data-dependent initialization runs the objective under no_grad: penalties must still evaluate."""
    from genbits.config import load_config
    from genbits.train import train

    objective = ", ".join(f"{key}: {value}" for key, value in penalty.items())
    overrides = [
        f"objective={{name: {name}, {objective}}}",
        "train.steps=3",
        "train.batch_size=32",
        "train.sample_every=0",
    ]
    result = train(load_config("gan-ring", overrides), tmp_path, progress=False)
    assert result.step == 3


# ---------------------------------------------------------------- MMD-GAN


def fixed_features(seed: int, n: int = 12, m: int = 9, dim: int = 5) -> tuple[Tensor, Tensor]:
    """Two clouds of critic features on the bandwidths' scale, with a repeated point (k(x, x) on and off the
    diagonal): float64."""
    g = torch.Generator().manual_seed(seed)
    real = 3 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    fake = 3 * torch.randn(m, dim, generator=g, dtype=torch.float64) + 1.0
    real[1] = real[0]
    return real, fake


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_mmd_loss_is_the_metric_mmd2_on_the_features(seed: int, unbiased: bool) -> None:
    """Same RBF mixture (σ ∈ {1, …, 16}), same estimator: L_G = MMD² = −L_D, as ``metrics.mmd2`` computes it."""
    from genbits.metrics import mmd2

    real, fake = fixed_features(seed)
    losses = mmd_loss(real, fake, unbiased=unbiased)
    expected = mmd2(real, fake, unbiased=unbiased)
    assert losses.generator.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert losses.discriminator.item() == pytest.approx(-expected, rel=1e-10, abs=1e-12)
    narrow = mmd_loss(real, fake, sigmas=(0.5, 3.0), unbiased=unbiased).generator.item()
    assert narrow == pytest.approx(mmd2(real, fake, sigmas=(0.5, 3.0), unbiased=unbiased), rel=1e-10, abs=1e-12)


def test_mmd_loss_gradients_are_finite_where_points_coincide_and_match_finite_differences() -> None:
    """‖x − x‖ = 0 on every diagonal (and for the repeated point): cdist's gradient there is NaN, the loss's is not."""
    real, fake = fixed_features(0, n=5, m=4, dim=3)
    real, fake = real.requires_grad_(True), fake.requires_grad_(True)
    grads = torch.autograd.grad(mmd_loss(real, fake).generator, [real, fake])
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.autograd.gradcheck(lambda a, b: mmd_loss(a, b, unbiased=False).generator, (real, fake))


def test_the_witness_function_averages_to_the_biased_mmd2() -> None:
    """MMD²_b = mean_i f(xᵢ) − mean_j f(x̃ⱼ) for the witness f = mean k(·, X) − mean k(·, X̃) (identity map)."""
    real, fake = fixed_features(3)
    witness = mmd_witness(lambda x: x, real, fake)
    gap = (witness(real).mean() - witness(fake).mean()).item()
    assert gap == pytest.approx(mmd_loss(real, fake, unbiased=False).generator.item(), rel=1e-12)


def tiny_feature_gan(**options) -> nn.Module:
    from genbits.models.gan import gan as build_gan

    torch.manual_seed(0)
    return build_gan(event_shape=(2,), latent=4, width=8, depth=1, g_norm="none", **options)


def mmd_losses(options: dict) -> Tensor:
    model, batch = tiny_feature_gan(), Batch(torch.randn(16, 2, generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(1)
    out = OBJECTIVES.build("mmd-gan", options, dataset=None)(model, batch)
    return torch.stack([out.per_player["discriminator"], out.per_player["generator"]])


def test_mmd_gan_objective_plays_the_mmd_game_on_critic_features() -> None:
    """Without penalty the losses are ∓MMD² of the critic's features (not its scores) of the batch and the fakes."""
    model, batch = tiny_feature_gan(), Batch(torch.randn(16, 2, generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(1)
    fake = model.generator(model.sample_latent(16))
    expected = mmd_loss(model.discriminator.features(batch.x), model.discriminator.features(fake))
    torch.manual_seed(1)
    out = OBJECTIVES.build("mmd-gan", {"gradient_penalty": 0.0}, dataset=None)(model, batch)
    assert torch.equal(out.per_player["generator"], expected.generator)
    assert torch.equal(out.per_player["discriminator"], expected.discriminator)
    assert set(out.metrics) == {"mmd2"}


def test_mmd_gan_penalty_is_on_the_witness_and_reaches_the_critic_only() -> None:
    """Bińkowski et al.'s default λ = 1 on the witness: added to L_D, L_G unchanged, both players still move."""
    model, batch = tiny_feature_gan(), Batch(torch.randn(16, 2, generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(1)
    plain = OBJECTIVES.build("mmd-gan", {"gradient_penalty": 0.0}, dataset=None)(model, batch)
    torch.manual_seed(1)
    out = OBJECTIVES.build("mmd-gan", {}, dataset=None)(model, batch)
    assert out.metrics["gradient_penalty"] > 0
    assert torch.equal(out.per_player["generator"], plain.per_player["generator"])
    assert torch.allclose(
        out.per_player["discriminator"], plain.per_player["discriminator"] + out.metrics["gradient_penalty"]
    )
    for player, module in model.players().items():
        grads = torch.autograd.grad(
            out.per_player[player], list(module.parameters()), allow_unused=True, retain_graph=True
        )
        assert any(g is not None and g.abs().sum() > 0 for g in grads), player


@pytest.mark.parametrize(("option", "value"), [("unbiased", False), ("sigmas", [0.5, 1.0]), ("r1", 1.0)])
def test_every_mmd_gan_option_applies(option: str, value) -> None:
    assert not torch.allclose(mmd_losses({}), mmd_losses({option: value}))


@pytest.mark.parametrize(("options", "word"), [({"sigmas": [1.0, -2.0]}, "sigmas"), ({"sigmas": []}, "sigmas")])
def test_mmd_gan_rejects_bad_bandwidths(options: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        OBJECTIVES.build("mmd-gan", options, dataset=None)


def test_mmd_gan_refuses_a_conditional_critic() -> None:
    model = tiny_feature_gan(num_classes=3, conditioning="concat")
    batch = Batch(torch.randn(8, 2), torch.randint(0, 3, (8,)))
    with pytest.raises(ValueError, match="conditioning none"):
        OBJECTIVES.build("mmd-gan", {}, dataset=None)(model, batch)
