"""Game update rules: integrator orders, the Dirac-GAN's linear stability per rule (predicted and simulated), the
O(h³) local error of the derived drift terms, exact resume for every rule, and option validation."""

import cmath
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import assert_same_state, final_state
from torch import nn

import genbits.components  # noqa: F401  (fills the registries)
from genbits import load_config
from genbits.config import OptimConfig, PlayerOptim
from genbits.data.base import Batch
from genbits.errors import ConfigError
from genbits.experiments.dirac_gan import build, data_batch
from genbits.objectives.base import Losses
from genbits.optim.field import GradientField
from genbits.optim.games import drift_penalty, drift_terms, plus
from genbits.optim.integrators import RK4, TABLEAUS, step
from genbits.optim.linear_analysis import spectral_radius, step_jacobian
from genbits.optim.rules import Batches
from genbits.registry import RULES
from genbits.train import checkpoint, train
from genbits.train.rundir import RunDir

F64 = torch.float64
C = 0.5  # f'(0) = σ(0) for the logistic losses: the field's Jacobian at the equilibrium has eigenvalues ±iC

# ---------------------------------------------------------------------------------------------- (a) integrators


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_integrators_reach_their_order_on_a_linear_ode(method):
    """Global error at t = 1 of v̇ = Av against exp(A): halving h divides it by 2^order."""
    a = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=F64)
    v0 = {"x": [torch.tensor([1.0, 0.5], dtype=F64)]}
    exact = torch.linalg.matrix_exp(a) @ v0["x"][0]

    def error(n: int) -> float:
        v = v0
        for _ in range(n):
            v = step(lambda s: {"x": [a @ s["x"][0]]}, v, 1.0 / n, TABLEAUS[method])
        return float((v["x"][0] - exact).norm())

    tableau = TABLEAUS[method]
    ratio = error(20) / error(40)
    assert ratio == pytest.approx(2**tableau.order, rel=0.1)


# ---------------------------------------------------------------------------------------------- the Dirac-GAN


def rk4_polynomial(z: complex) -> complex:
    return 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24


def largest_root(y: float) -> float:
    """Optimistic gradient on v̇ = Jv, eigenvalue μ = iC of J: z² = (1 + 2hμ)z − hμ."""
    hmu = 1j * y
    disc = cmath.sqrt((1 + 2 * hmu) ** 2 - 4 * hmu)
    return max(abs((1 + 2 * hmu + s * disc) / 2) for s in (1, -1))


def regularized_rk4(h: float, gamma: float) -> float:
    """RK4 on the rotation J = [[0, C], [−C, 0]] (θ, φ), then −h·γ∇_φ‖∇_θL_G‖² ≈ −2hγC²φ on φ."""
    hj = h * torch.tensor([[0.0, C], [-C, 0.0]], dtype=F64)
    eye = torch.eye(2, dtype=F64)
    m = eye + hj + hj @ hj / 2 + hj @ hj @ hj / 6 + hj @ hj @ hj @ hj / 24
    m[1, 1] -= 2 * h * gamma * C**2
    return spectral_radius(m)


# (rule, options, ρ(h)): y = h f'(0); simultaneous GD is ``drift`` with correction none (gd's map)
PREDICTIONS = {
    "simultaneous GD": ("drift", {"correction": "none"}, lambda h: math.sqrt(1 + (h * C) ** 2)),
    "alternating GD": ("alternating", {}, lambda h: 1.0),
    "euler": ("ode", {"method": "euler"}, lambda h: math.sqrt(1 + (h * C) ** 2)),
    "heun": ("ode", {"method": "heun"}, lambda h: math.sqrt(1 + (h * C) ** 4 / 4)),
    "rk4": ("ode", {"method": "rk4"}, lambda h: abs(rk4_polynomial(1j * h * C))),
    "rk4 + regularizer": ("ode", {"method": "rk4", "regularizer": 1.0}, lambda h: regularized_rk4(h, 1.0)),
    "frozen-other rk4 (= simultaneous on a bilinear game)": (
        "ode",
        {"integration": "frozen-other"},
        lambda h: math.sqrt(1 + (h * C) ** 2),
    ),
    "cancel interaction drift": ("drift", {}, lambda h: math.sqrt(1 + (h * C) ** 4 / 4)),
    "extragradient": ("extragradient", {}, lambda h: math.sqrt((1 - (h * C) ** 2) ** 2 + (h * C) ** 2)),
    "optimistic": ("optimistic", {}, lambda h: largest_root(h * C)),
    "consensus": ("consensus", {"gamma": 1.0}, lambda h: math.sqrt((1 - h * C**2) ** 2 + (h * C) ** 2)),
}


@pytest.mark.parametrize("h", [0.1, 1.0])
@pytest.mark.parametrize("case", list(PREDICTIONS))
def test_spectral_radius_of_each_update_map_on_the_dirac_gan(case, h):
    rule, options, predicted = PREDICTIONS[case]
    model, objective, built = build(rule, options, 0.0, h)
    rho = spectral_radius(step_jacobian(built, model, objective, data_batch()))
    # at h·f'(0) = ½ optimistic's two eigenvalues coincide (a defective map: eigenvalues good to √eps only)
    assert rho == pytest.approx(predicted(h), abs=1e-7 if case == "optimistic" else 1e-12)


def test_what_the_dirac_spectra_say():
    """Simultaneous GD spirals out, alternating GD circles, RK4 at h = 0.1 is a hair inside the unit circle, its
    regularizer makes it converge, and cancelling only the interaction drift still diverges, slowly: read off
    genbits' own linear analysis (the autograd Jacobian of one step of each real rule on the real model)."""

    def rho(case: str) -> float:
        rule, options, _ = PREDICTIONS[case]
        model, objective, built = build(rule, options, 0.0, 0.1)
        return spectral_radius(step_jacobian(built, model, objective, data_batch()))

    assert rho("simultaneous GD") > 1.001
    assert rho("alternating GD") == pytest.approx(1.0, abs=1e-12)
    assert 1 - 1e-9 < rho("rk4") < 1
    assert rho("rk4 + regularizer") < 0.99
    assert 1 < rho("cancel interaction drift") < 1 + 1e-6


def norms(rule: str, options: dict, h: float, steps: int, start: float = 1e-3) -> list[float]:
    """‖(θ, φ)‖ along ``steps`` steps of the rule on the real model (through the GradientField)."""
    model, _, built = build(rule, options, start, h)
    batch = data_batch()
    out = []
    for _ in range(steps):
        built.step(Batches(batch, lambda: batch))
        out.append(float(torch.cat([p.detach() for p in model.parameters()]).norm()))
    return out


# maps that are normal matrices scale every distance by exactly ρ per step, so ‖v_K‖ = ρ^K ‖v_0‖ (linear regime);
# (h, K) keep the growth small enough to stay there
NORMAL = {
    "simultaneous GD": (0.1, 400),
    "heun": (1.0, 150),
    "rk4": (1.0, 150),
    "cancel interaction drift": (1.0, 150),
    "extragradient": (1.0, 150),
    "consensus": (1.0, 150),
}


@pytest.mark.parametrize("case", list(NORMAL))
def test_trajectories_follow_the_predicted_rate(case):
    rule, options, predicted = PREDICTIONS[case]
    h, steps = NORMAL[case]
    path = norms(rule, options, h, steps)
    assert path[-1] / (math.sqrt(2) * 1e-3) == pytest.approx(predicted(h) ** steps, rel=2e-3)


def test_trajectories_of_the_other_rules():
    start = math.sqrt(2) * 1e-3
    alternating = norms("alternating", {}, 1.0, 150)
    assert min(alternating) / start > 0.7 and max(alternating) / start < 1.4  # bounded: circles around 0
    assert norms("ode", {"regularizer": 1.0}, 1.0, 150)[-1] / start < 1e-3
    optimistic = norms("optimistic", {}, 1.0, 150)
    assert optimistic[-1] / start == pytest.approx(largest_root(C) ** 150, rel=0.2)  # not normal: ≈ ρ^K
    assert optimistic[-1] / start < 0.3


DIRAC_RUN = {
    "data": "dirac",
    "model": {"name": "dirac-gan", "theta": 0.03, "phi": 0.03},
    "objective": {"name": "gan", "loss": "minimax"},
    "optim": {"optimizer": "sgd", "lr": 0.1},
    "train": {"batch_size": 4, "log_every": 50, "sample_every": 0, "checkpoint_every": 1000, "ema_decay": 0.0},
}


def dirac_config(rule: dict, steps: int, **optim):
    return load_config(
        {**DIRAC_RUN, "optim": {**DIRAC_RUN["optim"], **optim, "rule": rule}},
        [f"train.steps={steps}"],
    )


@pytest.mark.parametrize(
    "case,rule", [("simultaneous GD", {"name": "gd"}), ("rk4 + regularizer", {"name": "ode", "regularizer": 1.0})]
)
def test_the_training_loop_agrees_with_the_prediction(tmp_path, case, rule):
    """The default 2-D Dirac game through train(load_config(...)): the same eigenvalues, twice each."""
    train(dirac_config(rule, 200), tmp_path, progress=False)
    radius = torch.cat([t.flatten() for t in final_state(tmp_path)["model"].values()]).norm()
    ratio = float(radius) / (2 * 0.03)
    predicted = PREDICTIONS[case][2](0.1) ** 200  # 1.28 and 0.006
    if case == "simultaneous GD":  # a normal map: exactly ρ^K in the linear regime
        assert ratio == pytest.approx(predicted, rel=0.01)
    else:  # not normal: ρ^K up to a bounded factor
        assert ratio < 10 * predicted


# ---------------------------------------------------------------------------------------------- (c) drift terms


class QuadraticGame(nn.Module):
    """A general (not zero-sum) quadratic game in φ, θ ∈ ℝ²: every drift term is non-zero."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.discriminator, self.generator = nn.Module(), nn.Module()
        self.discriminator.w = nn.Parameter(torch.randn(2, generator=g, dtype=F64))
        self.generator.w = nn.Parameter(torch.randn(2, generator=g, dtype=F64))
        self.register_buffer("m", torch.randn(8, 2, 2, generator=g, dtype=F64))
        self.register_buffer("c", torch.randn(2, 2, generator=g, dtype=F64))

    def players(self):
        return {"discriminator": self.discriminator, "generator": self.generator}


def quadratic_losses(model: QuadraticGame, batch: Batch) -> Losses:
    phi, theta, m = model.discriminator.w, model.generator.w, model.m
    eye = torch.eye(2, dtype=F64)
    loss_d = 0.5 * phi @ (m[0] @ m[0].T + eye) @ phi + phi @ m[1] @ theta + 0.5 * theta @ m[2] @ theta
    loss_g = 0.5 * theta @ (m[3] @ m[3].T + eye) @ theta + theta @ m[4] @ phi + 0.5 * phi @ m[5] @ phi
    return Losses({"discriminator": loss_d + model.c[0] @ phi, "generator": loss_g + model.c[1] @ theta})


def local_error(h: float, rates: dict[str, float], updates: str, form: str | None) -> float:
    """‖one GD step − the modified flow over time h‖; the flow moves each player at its rate (lr = rate·h) and
    carries the drift terms of ``form`` (None: the plain flow), integrated by 20 RK4 steps."""
    model = QuadraticGame()
    players = model.players()
    field = GradientField(model, quadratic_losses, players)
    lr = {p: r * h for p, r in rates.items()}
    optim = OptimConfig(optimizer="sgd", players={p: PlayerOptim(lr=v) for p, v in lr.items()})
    rule = RULES.build(
        "gd" if updates == "simultaneous" else "alternating", {}, players=players, optim=optim, field=field
    )
    start = {p: [x.detach().clone() for x in xs] for p, xs in field.params.items()}
    batch = Batch(torch.zeros(1, 1, dtype=F64))
    rule.step(Batches(batch, lambda: batch))
    gd = {p: [x.detach().clone() for x in xs] for p, xs in field.params.items()}
    order = None if updates == "simultaneous" else ("discriminator", "generator")
    terms = drift_terms(lr, order, form or "derived")
    penalty = drift_penalty({p: (t.self_term, t.interaction) for p, t in terms.items()}) if form else None

    def modified_flow(v):
        with torch.no_grad():
            for p, xs in v.items():
                for param, x in zip(field.params[p], xs, strict=True):
                    param.copy_(x)
        value = field.evaluate(batch, penalty=penalty)
        return {p: [-g for g in plus(value.grads[p], value.penalty_grads.get(p))] for p in v}

    v, n = start, 20
    for _ in range(n):
        v = step(modified_flow, v, {p: r * h / n for p, r in rates.items()}, RK4)
    return float(torch.cat([(a - b).flatten() for p in v for a, b in zip(v[p], gd[p], strict=True)]).norm())


def error_ratio(rates, updates, form, h=0.01):
    return local_error(h, rates, updates, form) / local_error(h / 2, rates, updates, form)


@pytest.mark.parametrize("updates", ["simultaneous", "alternating"])
def test_derived_drift_terms_have_local_error_h_cubed(updates):
    unequal = {"discriminator": 1.0, "generator": 0.3}
    assert error_ratio(unequal, updates, "derived") == pytest.approx(8, rel=0.03)
    assert error_ratio({"discriminator": 1.0, "generator": 1.0}, updates, "derived") == pytest.approx(8, rel=0.03)
    assert error_ratio(unequal, updates, None) == pytest.approx(4, rel=0.03)  # without drift terms: O(h²)


@pytest.mark.parametrize("updates", ["simultaneous", "alternating"])
def test_code_form_is_h_squared_unless_rates_are_equal(updates):
    unequal = {"discriminator": 1.0, "generator": 0.3}
    assert error_ratio(unequal, updates, "code", h=0.002) == pytest.approx(4, rel=0.05)
    assert error_ratio({"discriminator": 1.0, "generator": 1.0}, updates, "code") == pytest.approx(8, rel=0.03)


def test_drift_coefficients():
    lr = {"discriminator": 0.2, "generator": 0.1}
    sim = drift_terms(lr, None, "derived")
    assert sim["discriminator"].self_term == pytest.approx(0.05) and sim["discriminator"].interaction == 0.05
    alt = drift_terms(lr, ("discriminator", "generator"), "derived")
    assert alt["generator"].interaction == pytest.approx(-0.1)  # −α/2: the second mover's term flips
    code = drift_terms(lr, ("discriminator", "generator"), "code")
    assert code["discriminator"].interaction == pytest.approx(0.1)  # own lr
    assert code["generator"].interaction == pytest.approx(-(0.2 - 0.05))  # −(α − λ/2)


# ---------------------------------------------------------------------------------------------- the model path


def dirac_field(theta: torch.Tensor, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """F = (−∇_θ L_G, −∇_φ L_D) of the minimax Dirac game, by hand."""
    s = torch.sigmoid(phi * theta)
    return s * phi, -s * theta


@pytest.mark.parametrize("integration", ["joint", "frozen-other"])
@pytest.mark.parametrize("method", ["heun", "rk4"])
def test_ode_step_on_the_model_is_the_hand_written_integrator(method, integration):
    """One step with the regularizer, through the GradientField, against the Dirac field written by hand."""
    h, gamma, t0, p0 = 0.3, 0.7, torch.tensor(0.75, dtype=F64), torch.tensor(0.75, dtype=F64)  # exact in fp32
    tableau = TABLEAUS[method]
    if integration == "joint":
        new = step(
            lambda v: dict(zip("tp", ([x] for x in dirac_field(v["t"][0], v["p"][0])), strict=True)),
            {"t": [t0], "p": [p0]},
            h,
            tableau,
        )
        t1, p1 = new["t"][0], new["p"][0]
    else:
        t1 = step(lambda v: {"t": [dirac_field(v["t"][0], p0)[0]]}, {"t": [t0]}, h, tableau)["t"][0]
        p1 = step(lambda v: {"p": [dirac_field(t0, v["p"][0])[1]]}, {"p": [p0]}, h, tableau)["p"][0]
    s = torch.sigmoid(p0 * t0)
    p1 = p1 - h * gamma * 2 * (s * p0) * (s * (1 - s) * t0 * p0 + s)  # ∇_φ (σ(φθ)φ)² at the start
    model, _, built = build("ode", {"method": method, "regularizer": gamma, "integration": integration}, 0.75, h)
    batch = data_batch()
    built.step(Batches(batch, lambda: batch))
    torch.testing.assert_close(model.generator.theta[0], t1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.discriminator.phi[0], p1, rtol=1e-12, atol=1e-14)


EVALUATIONS = [
    ({"name": "gd"}, 1),
    ({"name": "alternating", "n_critic": 3}, 4),
    ({"name": "ode", "method": "heun"}, 2),
    ({"name": "ode", "method": "rk4"}, 4),
    ({"name": "ode", "method": "rk4", "integration": "frozen-other"}, 7),
    ({"name": "extragradient"}, 2),
    ({"name": "optimistic"}, 1),
    ({"name": "consensus"}, 1),
    ({"name": "drift"}, 1),
    ({"name": "drift", "updates": "alternating"}, 2),
]


@pytest.mark.parametrize("rule,evaluations", EVALUATIONS)
def test_field_evaluations_per_step(rule, evaluations):
    options = {k: v for k, v in rule.items() if k != "name"}
    _, _, built = build(rule["name"], options, 0.5, h=0.1)
    batch, drawn = data_batch(), []
    built.step(Batches(batch, lambda: drawn.append(1) or batch))
    assert built.field.evaluations == evaluations
    fresh = {"alternating": 3}.get(rule["name"], 0) + (1 if options.get("updates") == "alternating" else 0)
    assert len(drawn) == fresh  # alternating turns draw fresh batches; same-batch stages do not


class NoisyGame(nn.Module):
    """Two scalar players whose losses use a random draw, recorded per evaluation (latents, say)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
        self.draws: list[float] = []

    def players(self):
        return {"a": self.a, "b": self.b}


def noisy_losses(model: NoisyGame, batch: Batch) -> Losses:
    noise = torch.rand(())
    model.draws.append(float(noise))
    value = model.a.weight.sum() * model.b.weight.sum() * (1 + noise) + batch.x.mean()
    return Losses({"a": value, "b": -value})


@pytest.mark.parametrize("stages", ["same", "fresh"])
def test_same_stages_replay_the_first_evaluations_randomness(stages):
    model = NoisyGame()
    field = GradientField(model, noisy_losses, model.players())
    rule = RULES.build(
        "ode", {"stages": stages}, players=model.players(), optim=OptimConfig(optimizer="sgd"), field=field
    )
    batches, drawn = Batch(torch.zeros(2, 1)), []
    torch.manual_seed(0)
    rule.step(Batches(batches, lambda: drawn.append(1) or Batch(torch.ones(2, 1))))
    after = torch.rand(())
    torch.manual_seed(0)
    first, second = torch.rand(()), torch.rand(())
    if stages == "same":
        assert model.draws == [float(first)] * 4 and not drawn
        assert after == second  # the stream continues as after one evaluation
    else:
        assert len(set(model.draws)) == 4 and len(drawn) == 3


# ---------------------------------------------------------------------------------------------- (d) exact resume


RESUMED = [
    ({"name": "alternating", "n_critic": 2}, {"optimizer": "adam", "betas": [0.5, 0.999], "lr": 0.01}),
    ({"name": "ode", "method": "rk4", "regularizer": 0.5, "stages": "fresh"}, {}),
    ({"name": "ode", "method": "heun", "integration": "frozen-other"}, {}),
    ({"name": "extragradient"}, {"optimizer": "adam", "lr": 0.01}),
    ({"name": "optimistic"}, {"optimizer": "adam", "betas": [0.0, 0.9], "lr": 0.01}),
    ({"name": "consensus", "gamma": 1.0}, {"optimizer": "rmsprop", "lr": 0.01}),
    ({"name": "drift", "updates": "alternating", "form": "code"}, {}),
]


@pytest.mark.parametrize("rule,optim", RESUMED, ids=[f"{r['name']}-{i}" for i, (r, _) in enumerate(RESUMED)])
def test_every_rule_resumes_exactly(tmp_path, rule, optim):
    """N steps, then extended to 2N == 2N in one go: torch.equal on every tensor of the checkpoint (model, the
    rule's optimizers and memory — optimistic's previous gradients — stream, RNG)."""
    train(dirac_config(rule, 5, **optim), tmp_path / "split", progress=False)
    train(dirac_config(rule, 10, **optim), tmp_path / "split", progress=False)
    train(dirac_config(rule, 10, **optim), tmp_path / "whole", progress=False)
    split = final_state(tmp_path / "split")
    assert_same_state(split, final_state(tmp_path / "whole"))
    if rule["name"] == "optimistic":
        tensors = {}
        checkpoint.flatten(split, tensors)
        assert any(k.startswith("rule.memory.previous") for k in tensors)
    metrics = [[{k: v for k, v in r.items() if k != "time"} for r in RunDir(d).metrics()] for d in ("split", "whole")]
    assert metrics[0] == metrics[1]


# ---------------------------------------------------------------------------------------------- (e) validation


@pytest.mark.parametrize(
    "rule,match",
    [
        ({"name": "ode", "method": "rk3"}, r"optim\.rule\.method: 'rk3' is not allowed.*'rk4'"),
        ({"name": "alternating", "n_critic": "two"}, r"optim\.rule\.n_critic: 'two' is not an int"),
        ({"name": "drift", "correction": "cancel-interactions"}, r"optim\.rule\.correction.*did you mean"),
        ({"name": "ode", "gamma": 1.0}, r"optim\.rule\.gamma: unknown option.*allowed: method"),
        ({"name": "consensus", "gamma": "big"}, r"optim\.rule\.gamma: 'big' is not a number"),
    ],
)
def test_option_types_are_checked_when_the_config_loads(rule, match):
    with pytest.raises(ConfigError, match=match):
        dirac_config(rule, 1)


@pytest.mark.parametrize(
    "rule,optim,match",
    [
        ({"name": "alternating", "n_critic": 0}, {}, r"optim\.rule \(alternating\): n_critic must be .*>= 1"),
        ({"name": "ode"}, {"optimizer": "adam"}, r"optim\.rule \(ode\).*optim\.optimizer=sgd.*optimizer=adam"),
        ({"name": "ode", "regularizer": -1}, {}, r"optim\.rule \(ode\): regularizer must be"),
        ({"name": "consensus", "gamma": -1}, {}, r"optim\.rule \(consensus\): gamma must be"),
        (
            {"name": "drift", "first": "generator"},
            {},
            r"optim\.rule\.first: the order is part of updates now: .*alternating-generator-first",
        ),
    ],
)
def test_option_values_are_checked_when_the_rule_is_built(tmp_path, rule, optim, match):
    with pytest.raises(ConfigError, match=match):
        train(dirac_config(rule, 1, **optim), tmp_path, progress=False)


def test_two_player_rules_refuse_a_single_player_model(tmp_path):
    config = load_config("flow-ring", ["model.name=gaussian", "optim.rule.name=alternating", "train.steps=1"])
    with pytest.raises(ConfigError, match=r"optim\.rule \(alternating\): .*'generator' and 'discriminator'"):
        train(config, tmp_path, progress=False)


# ---------------------------------------------------------------------------------------------- DDP


@pytest.mark.slow
@pytest.mark.parametrize(
    "rule",
    [
        {"name": "ode", "method": "rk4", "regularizer": 0.5, "stages": "fresh"},
        {"name": "drift", "updates": "alternating"},
        {"name": "optimistic"},
    ],
)
def test_game_rules_under_torchrun_match_one_process(tmp_path, rule):
    """2 gloo processes vs 1: every evaluation (stages and penalty gradients included) is all-reduced, and every
    process takes the same branches (no collective is left waiting)."""
    source = tmp_path / "dirac.yaml"
    source.write_text(yaml.safe_dump({**DIRAC_RUN, "optim": {**DIRAC_RUN["optim"], "rule": rule}}))
    args = ["-m", "genbits", "train", str(source), "--set", "train.steps=20", "--no-progress", "--run-dir"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args[1:]]
    for command, run in ((ddp, "ddp"), ([sys.executable, *args], "one")):
        done = subprocess.run([*command, str(tmp_path / run)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = final_state(tmp_path / "ddp")["model"], final_state(tmp_path / "one")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize(
    "updates,first", [("alternating", "discriminator"), ("alternating-generator-first", "generator")]
)
def test_drift_without_correction_alternates_in_the_order_its_updates_name(updates, first):
    """drift with correction none is plain alternating GD: the same step as ``alternating`` with that player first."""
    ends = []
    for rule, options in [("drift", {"updates": updates, "correction": "none"}), ("alternating", {"first": first})]:
        model, _, built = build(rule, options, 0.3)
        built.step(Batches(data_batch(), data_batch))
        ends.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(ends[0], ends[1])
    other, _, built = build("drift", {"updates": "alternating", "correction": "none"}, 0.3)
    if first == "generator":  # and the order matters: discriminator-first lands elsewhere
        built.step(Batches(data_batch(), data_batch))
        assert not torch.equal(torch.cat([p.detach().flatten() for p in other.parameters()]), ends[0])
