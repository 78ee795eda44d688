"""Adversarial objectives: GAN losses on critic outputs, the f-GAN table, MMD on critic features, gradient penalties,
and the registered objectives ``gan``, ``least-squares``, ``f-gan`` and ``mmd-gan``.

Everything is a pure function of critic values (real ``d_real``, fake ``d_fake``: scores of shape (B,), or for MMD-GAN
features of shape (B, F)) so each loss can be checked by hand. The objective returns one loss per player from ONE
forward graph (see ``Adversarial``). References: Goodfellow et al. 2014 (minimax / non-saturating), Lim & Ye 2017
(hinge), Mao et al. 2017 (least squares), Arjovsky et al. 2017 (WGAN), Gulrajani et al. 2017 (gradient penalty),
Mescheder et al. 2018 (R1/R2), Nowozin et al. 2016 (f-GAN), Li et al. 2017 and Bińkowski et al. 2018 (MMD-GAN).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.data.base import Batch
from genbits.metrics.mmd import mmd2_from_kernels
from genbits.models.base import Conditional
from genbits.objectives.base import Losses
from genbits.registry import OBJECTIVES

LOG2 = math.log(2.0)


class GameLosses(NamedTuple):
    """What each player minimizes. Both come from the same critic values (no detach: see ``Adversarial``)."""

    discriminator: Tensor
    generator: Tensor


# ---------------------------------------------------------------- losses on critic outputs (D(x) = raw logits)


def logistic_discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """−E log σ(D(x)) − E log(1 − σ(D(G z))), on logits: the D loss of both the minimax and non-saturating games."""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def minimax_loss(d_real: Tensor, d_fake: Tensor) -> GameLosses:
    """The original game: D maximizes E log σ(D(x)) + E log(1 − σ(D(G z))), G minimizes E log(1 − σ(D(G z))).

    Written with softplus on logits (log σ(v) = −softplus(−v)) so it never takes log(0). At the optimal D the
    generator minimizes 2·JSD − log 4, but its gradient vanishes when D confidently rejects fakes (D(G z) ≪ 0).
    """
    return GameLosses(logistic_discriminator_loss(d_real, d_fake), -F.softplus(d_fake).mean())


def non_saturating_loss(d_real: Tensor, d_fake: Tensor) -> GameLosses:
    """Same D loss as minimax; G minimizes −E log σ(D(G z)) = E softplus(−D(G z)), whose gradient is strong
    exactly where minimax's vanishes (early training, D(G z) ≪ 0). Same fixed points, better dynamics."""
    return GameLosses(logistic_discriminator_loss(d_real, d_fake), F.softplus(-d_fake).mean())


def hinge_loss(d_real: Tensor, d_fake: Tensor) -> GameLosses:
    """L_D = E relu(1 − D(x)) + E relu(1 + D(G z)), L_G = −E D(G z): D stops pushing once a margin of 1 is met."""
    loss_d = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    return GameLosses(loss_d, -d_fake.mean())


LSGAN_CODINGS: dict[str, tuple[float, float, float]] = {"0-1-1": (0.0, 1.0, 1.0), "-1-1-0": (-1.0, 1.0, 0.0)}
"""(a, b, c) targets of Mao et al.: fake label a, real label b, the value G wants D to give fakes c.
(0, 1, 1) is the usual coding; (−1, 1, 0) (b − c = 1, b − a = 2) makes G minimize the Pearson χ² of (P+Q, 2Q)."""


def least_squares_loss(d_real: Tensor, d_fake: Tensor, a: float = 0.0, b: float = 1.0, c: float = 1.0) -> GameLosses:
    """L_D = ½E(D(x) − b)² + ½E(D(G z) − a)², L_G = ½E(D(G z) − c)²: gradients grow with distance to the target,
    so fakes on the right side of the boundary but far from the data are still pulled in."""
    loss_d = 0.5 * (d_real - b).pow(2).mean() + 0.5 * (d_fake - a).pow(2).mean()
    return GameLosses(loss_d, 0.5 * (d_fake - c).pow(2).mean())


def wasserstein_loss(d_real: Tensor, d_fake: Tensor) -> GameLosses:
    """L_D = E D(G z) − E D(x), L_G = −E D(G z): −L_D estimates W₁ only if D is kept 1-Lipschitz (weight clipping
    in the update rule, or a gradient penalty here); without a constraint the critic values grow without bound."""
    return GameLosses(d_fake.mean() - d_real.mean(), -d_fake.mean())


# ---------------------------------------------------------------- f-GAN


@dataclass(frozen=True)
class FDivergence:
    """One row of the f-GAN table (Nowozin et al. 2016, Table 2):
    D_f(P‖Q) = ∫ q f(p/q) ≥ sup_T E_P[T] − E_Q[f*(T)], T = g_f(V).

    ``f`` is the convex generator (f(1) = 0 except the GAN row), ``activation`` g_f maps the critic's raw output V
    from ℝ into the domain of the convex conjugate ``conjugate`` f*, and ``conjugate_activation`` is f*∘g_f written
    in a numerically stable form (f*(g_f(v)) directly saturates to log 0 for the JS and GAN rows when v ≫ 0).
    """

    f: Callable[[Tensor], Tensor]
    activation: Callable[[Tensor], Tensor]
    conjugate: Callable[[Tensor], Tensor]
    conjugate_activation: Callable[[Tensor], Tensor]


F_DIVERGENCES: dict[str, FDivergence] = {
    "kl": FDivergence(
        f=lambda u: torch.xlogy(u, u),
        activation=lambda v: v,
        conjugate=lambda t: torch.exp(t - 1.0),
        conjugate_activation=lambda v: torch.exp(v - 1.0),
    ),
    "reverse-kl": FDivergence(
        f=lambda u: -torch.log(u),
        activation=lambda v: -torch.exp(-v),
        conjugate=lambda t: -1.0 - torch.log(-t),
        conjugate_activation=lambda v: v - 1.0,
    ),
    "pearson": FDivergence(
        f=lambda u: (u - 1.0).pow(2),
        activation=lambda v: v,
        conjugate=lambda t: t.pow(2) / 4.0 + t,
        conjugate_activation=lambda v: v.pow(2) / 4.0 + v,
    ),
    "squared-hellinger": FDivergence(
        f=lambda u: (torch.sqrt(u) - 1.0).pow(2),
        activation=lambda v: -torch.expm1(-v),
        conjugate=lambda t: t / (1.0 - t),
        conjugate_activation=lambda v: torch.expm1(v),
    ),
    "js": FDivergence(
        f=lambda u: torch.xlogy(u, u) - (u + 1.0) * torch.log((1.0 + u) / 2.0),
        activation=lambda v: LOG2 - F.softplus(-v),
        conjugate=lambda t: -LOG2 - torch.log1p(-torch.exp(t - LOG2)),  # −log(2 − eᵗ)
        conjugate_activation=lambda v: F.softplus(v) - LOG2,
    ),
    "gan": FDivergence(
        f=lambda u: torch.xlogy(u, u) - (u + 1.0) * torch.log1p(u),
        activation=lambda v: -F.softplus(-v),
        conjugate=lambda t: -torch.log(-torch.expm1(t)),  # −log(1 − eᵗ)
        conjugate_activation=lambda v: F.softplus(v),
    ),
}

FGanGenerator = Literal["saddle", "non-saturating"]


def f_gan_loss(
    d_real: Tensor, d_fake: Tensor, divergence: str | FDivergence = "js", generator: FGanGenerator = "non-saturating"
) -> GameLosses:
    """L_D = −(E_P[g_f(V(x))] − E_Q[f*(g_f(V(G z)))]), so −L_D is a lower bound on D_f(P‖Q), tight at T* = f'(p/q).

    ``generator="saddle"`` minimizes −E_Q[f*(g_f(V))] (the bound itself; its E_P term does not depend on G);
    ``"non-saturating"`` (default, what Nowozin et al. use in practice) maximizes E_Q[g_f(V)], which keeps the same
    fixed point but a useful gradient while D rejects fakes. For the ``gan`` row these are exactly the minimax and
    non-saturating GAN losses.
    """
    div = F_DIVERGENCES[divergence] if isinstance(divergence, str) else divergence
    loss_d = -(div.activation(d_real).mean() - div.conjugate_activation(d_fake).mean())
    if generator == "saddle":
        loss_g = -div.conjugate_activation(d_fake).mean()
    elif generator == "non-saturating":
        loss_g = -div.activation(d_fake).mean()
    else:
        raise ValueError(f"generator_loss: {generator!r} is not one of 'saddle', 'non-saturating'")
    return GameLosses(loss_d, loss_g)


# ---------------------------------------------------------------- MMD-GAN (critic features, not scores)

MMD_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Li et al. 2017's RBF bandwidths on critic features, the same as ``genbits.metrics.mmd2``'s."""


def rbf_mixture_kernel(a: Tensor, b: Tensor, sigmas: Sequence[float] = MMD_SIGMAS) -> Tensor:
    """Σ_σ exp(−‖aᵢ − bⱼ‖² / (2σ²)), (N, M), with ‖a − b‖² = ‖a‖² + ‖b‖² − 2aᵀb clamped at 0: unlike
    ``torch.cdist`` its gradient is finite where two points coincide (every diagonal entry of k(x, x))."""
    sq = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(0.0)
    return sum(torch.exp(-sq / (2 * s**2)) for s in sigmas)


def mmd_loss(f_real: Tensor, f_fake: Tensor, sigmas: Sequence[float] = MMD_SIGMAS, unbiased: bool = True) -> GameLosses:
    """MMD-GAN: the critic's features φ (B, F) maximize MMD²(φ(x), φ(G z)) under the RBF mixture, the generator
    minimizes it: L_D = −MMD², L_G = MMD². Bińkowski et al. 2018 train on the unbiased estimator (its gradients
    are unbiased), Li et al. 2017 on the biased one (``unbiased=False``)."""
    k = partial(rbf_mixture_kernel, sigmas=sigmas)
    mmd2 = mmd2_from_kernels(k(f_real, f_real), k(f_fake, f_fake), k(f_real, f_fake), unbiased)
    return GameLosses(-mmd2, mmd2)


def mmd_witness(
    features: Callable[[Tensor], Tensor], f_real: Tensor, f_fake: Tensor, sigmas: Sequence[float] = MMD_SIGMAS
) -> Callable[[Tensor], Tensor]:
    """The witness function x ↦ mean_j k(φ(x), φ(xⱼ)) − mean_j k(φ(x), φ(x̃ⱼ)), (B,): the critic of an MMD game,
    whose input gradient Bińkowski et al. 2018 penalize (the scalar the penalties act on)."""

    def witness(x: Tensor) -> Tensor:
        f = features(x)
        return rbf_mixture_kernel(f, f_real, sigmas).mean(1) - rbf_mixture_kernel(f, f_fake, sigmas).mean(1)

    return witness


# ---------------------------------------------------------------- penalties (added to the discriminator's loss)


def _input_gradients(discriminator: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """∇ₓD(x) per sample, flattened to (B, −1), kept in the graph so the penalty can be differentiated w.r.t. D.

    The points are detached: a penalty regularizes D only. Summing D over the batch gives per-sample gradients as
    long as D treats samples independently (no batch norm in the critic).
    """
    with torch.enable_grad():  # a penalty also evaluates under no_grad (the loop's data-dependent initialization)
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, weight: float = 10.0
) -> Tensor:
    """WGAN-GP: λ E(‖∇D(x̂)‖ − 1)² at x̂ = εx + (1 − ε)x̃, ε ~ U[0, 1] per sample (a soft 1-Lipschitz constraint
    enforced along lines between data and fakes, where the optimal critic has unit gradient norm)."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), dtype=real.dtype, device=real.device)
    mixed = eps * real.detach() + (1.0 - eps) * fake.detach()
    norm = _input_gradients(discriminator, mixed).norm(dim=1)
    return weight * (norm - 1.0).pow(2).mean()


def r1_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, gamma: float = 10.0) -> Tensor:
    """R1: (γ/2) E_real ‖∇D(x)‖², zero-centred on the data, which makes the GAN equilibrium locally convergent."""
    return 0.5 * gamma * _input_gradients(discriminator, real).pow(2).sum(dim=1).mean()


def r2_penalty(discriminator: Callable[[Tensor], Tensor], fake: Tensor, gamma: float = 10.0) -> Tensor:
    """R2: (γ/2) E_fake ‖∇D(x̃)‖², the same zero-centred penalty on generated samples."""
    return 0.5 * gamma * _input_gradients(discriminator, fake).pow(2).sum(dim=1).mean()


# ---------------------------------------------------------------- the objective


class Adversarial:
    """Both players' losses from one forward pass: z ~ model.sample_latent(B), x̃ = G(z), D on batch.x and x̃
    (a conditional model gets the batch's labels on both sides).

    Nothing is detached: the gradient field differentiates each player's loss w.r.t. that player's parameters only,
    so L_D's dependence on G (through x̃) and L_G's on D are never used, and one graph serves simultaneous and
    alternating updates alike.

    ``loss`` maps critic scores to the players' losses (the game); the penalties, the same for every game and each
    applied when its weight is > 0, are added to L_D only: ``gradient_penalty`` λ of WGAN-GP, ``r1`` and ``r2`` the
    γ of the zero-centred R1 (on data) and R2 (on fakes). A subclass may compare other critic outputs (``critic``)
    and penalize another scalar function of x (``penalized``), as ``MMDAdversarial`` does.
    """

    def __init__(
        self,
        loss: Callable[[Tensor, Tensor], GameLosses],
        gradient_penalty: float = 0.0,
        r1: float = 0.0,
        r2: float = 0.0,
    ):
        for name, value in (("gradient_penalty", gradient_penalty), ("r1", r1), ("r2", r2)):
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite weight >= 0, got {value}")
        self.loss, self.gp, self.r1, self.r2 = loss, gradient_penalty, r1, r2

    def critic(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """What the game compares real and fake data by: the discriminator's scores (B,)."""
        return model.discriminator

    def penalized(
        self, critic: Callable[[Tensor], Tensor], d_real: Tensor, d_fake: Tensor
    ) -> Callable[[Tensor], Tensor]:
        """The scalar function of x whose input gradients the penalties constrain: the critic itself."""
        return critic

    def describe(self, d_real: Tensor, d_fake: Tensor, losses: GameLosses) -> dict[str, Tensor]:
        """Metrics logged beside the losses: the mean critic score on each side."""
        return {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}

    def __call__(self, model: nn.Module, batch: Batch) -> Losses:
        real = batch.x
        generate, critic = model.generator, self.critic(model)
        if isinstance(model, Conditional):  # fakes carry the batch's labels, so both sides share p(y)
            generate, critic = partial(generate, y=batch.y), partial(critic, y=batch.y)
        fake = generate(model.sample_latent(len(batch)))
        d_real, d_fake = critic(real), critic(fake)
        losses = self.loss(d_real, d_fake)
        loss_d, metrics = losses.discriminator, self.describe(d_real, d_fake, losses)
        scalar = self.penalized(critic, d_real, d_fake)
        penalties = {
            "gradient_penalty": (self.gp, lambda: gradient_penalty(scalar, real, fake, self.gp)),
            "r1": (self.r1, lambda: r1_penalty(scalar, real, self.r1)),
            "r2": (self.r2, lambda: r2_penalty(scalar, fake, self.r2)),
        }
        for name, (weight, penalty) in penalties.items():
            if weight > 0:
                value = penalty()
                loss_d = loss_d + value
                metrics[name] = value.detach()
        return Losses({"generator": losses.generator, "discriminator": loss_d}, metrics)


class MMDAdversarial(Adversarial):
    """MMD-GAN (Li et al. 2017; Bińkowski et al. 2018): the game is played on the critic's features (the network
    below its scoring head), and the penalties act on the MMD witness function of the batch (``mmd_witness``)."""

    def __init__(self, sigmas: Sequence[float], unbiased: bool, gradient_penalty: float, r1: float, r2: float):
        if not sigmas or not all(s > 0 and math.isfinite(s) for s in sigmas):
            raise ValueError(f"sigmas must be finite bandwidths > 0, got {list(sigmas)}")
        super().__init__(partial(mmd_loss, sigmas=tuple(sigmas), unbiased=unbiased), gradient_penalty, r1, r2)
        self.sigmas = tuple(sigmas)

    def critic(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        if isinstance(model, Conditional):
            raise ValueError("objective mmd-gan compares unconditional feature distributions: use conditioning none")
        return model.discriminator.features

    def penalized(
        self, critic: Callable[[Tensor], Tensor], d_real: Tensor, d_fake: Tensor
    ) -> Callable[[Tensor], Tensor]:
        return mmd_witness(critic, d_real, d_fake, self.sigmas)

    def describe(self, d_real: Tensor, d_fake: Tensor, losses: GameLosses) -> dict[str, Tensor]:
        return {"mmd2": losses.generator.detach()}


# ---------------------------------------------------------------- the registered objectives
# Four families of game, one class: each factory lists its own options (every one of them always applies) and the
# penalty weights, which ``Adversarial`` checks and applies the same way for all.

GanLoss = Literal["minimax", "non-saturating", "hinge", "wgan"]
LsganCoding = Literal["0-1-1", "-1-1-0"]
Divergence = Literal["kl", "reverse-kl", "pearson", "squared-hellinger", "js", "gan"]

GAN_LOSSES: dict[str, Callable[[Tensor, Tensor], GameLosses]] = {
    "minimax": minimax_loss,
    "non-saturating": non_saturating_loss,
    "hinge": hinge_loss,
    "wgan": wasserstein_loss,
}


def chosen(choices: Collection[str], key: str, option: str) -> str:
    """``key`` if it is one of ``choices``, else a ValueError naming the option and the choices (the registry checks
    config values against the Literal types; this checks Python callers)."""
    if key not in choices:
        raise ValueError(f"{option}: {key!r} is not one of {', '.join(choices)}")
    return key


@OBJECTIVES.register("gan")
def gan(
    loss: GanLoss = "non-saturating", gradient_penalty: float = 0.0, r1: float = 0.0, r2: float = 0.0
) -> Adversarial:
    """The GAN game on raw critic scores: ``loss`` minimax, non-saturating, hinge or wgan (pair wgan with a
    ``gradient_penalty``); ``gradient_penalty``, ``r1``, ``r2``: penalty weights (see ``Adversarial``)."""
    return Adversarial(GAN_LOSSES[chosen(GAN_LOSSES, loss, "loss")], gradient_penalty, r1, r2)


@OBJECTIVES.register("least-squares")
def least_squares(
    coding: LsganCoding = "0-1-1", gradient_penalty: float = 0.0, r1: float = 0.0, r2: float = 0.0
) -> Adversarial:
    """LSGAN (Mao et al. 2017): squared distances to the targets (a, b, c) of ``coding`` (see ``LSGAN_CODINGS``)."""
    a, b, c = LSGAN_CODINGS[chosen(LSGAN_CODINGS, coding, "coding")]
    return Adversarial(partial(least_squares_loss, a=a, b=b, c=c), gradient_penalty, r1, r2)


@OBJECTIVES.register("f-gan")
def f_gan(
    divergence: Divergence = "js",
    generator_loss: FGanGenerator = "non-saturating",
    gradient_penalty: float = 0.0,
    r1: float = 0.0,
    r2: float = 0.0,
) -> Adversarial:
    """f-GAN (Nowozin et al. 2016): the critic bounds the f-divergence ``divergence`` from below; the generator
    minimizes the bound (``saddle``) or its non-saturating form (see ``f_gan_loss``)."""
    div = chosen(F_DIVERGENCES, divergence, "divergence")
    gen = chosen(get_args(FGanGenerator), generator_loss, "generator_loss")
    return Adversarial(partial(f_gan_loss, divergence=div, generator=gen), gradient_penalty, r1, r2)


@OBJECTIVES.register("mmd-gan")
def mmd_gan(
    sigmas: tuple[float, ...] = MMD_SIGMAS,
    unbiased: bool = True,
    gradient_penalty: float = 1.0,
    r1: float = 0.0,
    r2: float = 0.0,
) -> Adversarial:
    """MMD-GAN: the critic's features maximize the MMD² with RBF bandwidths ``sigmas`` (``unbiased`` estimator or
    the biased one), the generator minimizes it; ``gradient_penalty`` (default λ = 1, Bińkowski et al. 2018),
    ``r1``, ``r2`` act on the witness function (see ``MMDAdversarial``)."""
    return MMDAdversarial(sigmas, unbiased, gradient_penalty, r1, r2)


# The options of the single ``gan`` objective before least squares and f-GAN became objectives of their own.
OBJECTIVES.retire(
    "gan", "loss", "'least-squares' is its own objective now: objective.name=least-squares", "least-squares"
)
OBJECTIVES.retire("gan", "loss", "'f-gan' is its own objective now: objective.name=f-gan", "f-gan")
OBJECTIVES.retire(
    "gan", "lsgan_coding", "now the option coding of objective least-squares: {name: least-squares, coding: …}"
)
for _option in ("divergence", "generator_loss"):
    OBJECTIVES.retire("gan", _option, f"now an option of objective f-gan: {{name: f-gan, {_option}: …}}")
