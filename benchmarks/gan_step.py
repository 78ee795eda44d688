"""Time per step of genbits' GAN update rules, and what the abstraction costs against a hand-written PyTorch loop.

    python benchmarks/gan_step.py [--steps 150] [--chunk 10] [--repeats 2] [--threads 1] [--clock cpu]
                                  [--arch mlp] [--size 14] [--images fashion-mnist] [--profile]

Table 1, the update rules. Each rule trains its own copy of one GAN (same initialization, same pre-drawn batches),
built and stepped as genbits' training loop does it: ``RULES.build(...)`` on a ``GradientField``, then
``rule.step(Batches(first, draw))`` (the loop's EMA, logging and LR schedule are left out). Default: the MLP GAN on
the ring of 8 Gaussians, batch 256, non-saturating loss; ``--arch dcgan`` runs the rules on the DCGAN of table 2.
Every rule uses Adam except the ODE rules, which integrate with plain SGD steps (genbits refuses anything else);
``gd (SGD)`` separates the optimizer's share from that of the extra evaluations. The rules run round-robin,
``chunk`` steps each, the order rotating every round, so machine load hits all alike. ms/step is the median over
chunks; ×gd the median and quartiles of the ratios to the Adam ``gd`` chunk of the same round; evaluations/step
the GradientField's count. The ODE regularizer's double backward is costed as rk4+reg minus rk4 in the same round.
Target: RK4 without regularizer ≤ 4.5× gd.

Table 2, the abstraction. genbits' ``gd`` rule (GradientField + one optimizer per player) against a hand-written
loop over deep copies of the same generator and discriminator modules, Adam on both sides with the same settings.
The baseline does exactly the work of genbits' step (one forward graph, each player's loss differentiated w.r.t.
its own parameters only):

    fake = G(z), z ~ N(0, I);  d_real, d_fake = D(x), D(fake)       one graph, fake not detached
    loss_d = softplus(−d_real).mean() + softplus(d_fake).mean();  loss_g = softplus(−d_fake).mean()
    zero_grad(G, D);  loss_g.backward(inputs=G params, retain_graph=True);  loss_d.backward(inputs=D params)
    opt_g.step();  opt_d.step()                                     simultaneous: both move after both backwards

``backward(inputs=...)`` is plain PyTorch's way to restrict a backward pass to one player, as genbits'
``torch.autograd.grad(loss, params)`` does: L_G is not differentiated into D's weights, L_D not propagated into G.
Both sides see the same batches and, the RNG being replayed, the same latents, so their parameters must agree at
the end: max |Δθ| is the check that the work is the same. The two alternate in chunks, the order flipping every
round; genbits/plain is the median of same-round ratios. Target: ≤ 1.05× on the DCGAN. ``--profile`` (automatic
when the target is missed) lists the aten ops whose per-step counts differ and the Python time in genbits' own
optim/train/objectives code. The MLP pair is there as the worst case: at 2-D a step is dispatcher-bound, so a
fixed per-step cost shows most.

One thread by default: a 2-D step is dispatcher-bound, and this machine has two cores shared with other work. For
the same reason the default clock is this process's CPU time: interleaving spreads other jobs' load evenly, but
wall time also counts every time slice they take (``--clock wall`` measures elapsed time, the default with several
threads, whose CPU times would add up). Under load even CPU time swings by a third from chunk to chunk (shared
caches and cores), hence the quartiles.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genbits.config import Config, load_config
from genbits.data import Batch, TensorDataset, build_dataset
from genbits.objectives.base import players_of
from genbits.optim.field import GradientField
from genbits.optim.rules import Batches
from genbits.registry import MODELS, OBJECTIVES, RULES
from genbits.train.stream import BatchStream

POOL = 32  # distinct batches per run, drawn before timing starts
WARMUP = 20  # untimed steps first: here the first 20–30 steps of every run were up to 2× slower than the rest
RK4_TARGET, ABSTRACTION_TARGET = 4.5, 1.05


@dataclass(frozen=True)
class RuleCase:
    """One row of table 1: a rule with its options and the optimizer both players get."""

    label: str
    rule: str
    options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"


GD = RuleCase("gd", "gd")
CASES = [
    GD,
    RuleCase("gd (SGD)", "gd", optimizer="sgd"),
    RuleCase("alternating, n_critic 1", "alternating", {"n_critic": 1}),
    RuleCase("alternating, n_critic 5", "alternating", {"n_critic": 5}),
    RuleCase("ode euler", "ode", {"method": "euler"}, "sgd"),
    RuleCase("ode heun", "ode", {"method": "heun"}, "sgd"),
    RuleCase("ode rk4", "ode", {"method": "rk4"}, "sgd"),
    RuleCase("ode rk4 + regularizer 0.07", "ode", {"method": "rk4", "regularizer": 0.07}, "sgd"),
    RuleCase("extragradient", "extragradient"),
    RuleCase("optimistic", "optimistic"),
    RuleCase("consensus, γ 10", "consensus", {"gamma": 10.0}),
    RuleCase("drift, cancel-interaction", "drift", {"correction": "cancel-interaction"}),
]


@dataclass(frozen=True)
class Problem:
    """A GAN to train: data, model options, batch size and the Adam settings usual for it."""

    name: str
    dataset: Any
    model: dict[str, Any]
    batch: int
    lr: float
    betas: tuple[float, float]


def problem(arch: str, size: int, images: str) -> Problem:
    """The MLP GAN on the ring, or the DCGAN on ``size``×``size`` Fashion-MNIST (or uniform noise) images."""
    if arch == "mlp":
        return Problem(
            "MLP GAN, ring of 8 Gaussians", build_dataset("ring", {}), {"arch": "mlp"}, 256, 1e-3, (0.9, 0.999)
        )
    if images == "random":
        x = torch.rand(POOL * 64, 1, size, size, generator=torch.Generator().manual_seed(0))
        dataset = TensorDataset(x, None, levels=256, num_classes=None, name="random")
    else:
        dataset = build_dataset("fashion-mnist", {"size": size})
    return Problem(f"DCGAN, {size}×{size} {images}", dataset, {"arch": "dcgan"}, 64, 2e-4, (0.5, 0.999))


def config_for(p: Problem, case: RuleCase, seed: int) -> Config:
    """The run's config, validated as a user's would be (the dataset is built once per table, not from here)."""
    return load_config(
        {
            "model": {"name": "gan", **p.model},
            "objective": {"name": "gan", "loss": "non-saturating"},
            "optim": {
                "rule": {"name": case.rule, **case.options},
                "optimizer": case.optimizer,
                "lr": p.lr,
                "betas": list(p.betas),
            },
            "train": {"batch_size": p.batch, "seed": seed},
        }
    )


class Pool:
    """Pre-drawn batches served in a cycle: drawing data never lands in a timed step."""

    def __init__(self, batches: list[Batch]):
        self.batches, self.position = batches, 0

    def __call__(self) -> Batch:
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch


def draw_batches(p: Problem, seed: int) -> list[Batch]:
    stream = BatchStream(p.dataset, p.batch, seed)
    return [next(stream) for _ in range(POOL)]


class Run:
    """One rule training its own GAN, built as ``train`` builds it (build_parts without re-reading the data)."""

    def __init__(self, p: Problem, config: Config, batches: list[Batch]):
        torch.manual_seed(config.train.seed)
        model, objective, data = config.model, config.objective, p.dataset
        self.model = MODELS.build(
            model.name,
            model.options,
            where="model",
            event_shape=data.event_shape,
            num_classes=data.num_classes,
            dataset=data,
        ).train()
        objective = OBJECTIVES.build(objective.name, objective.options, where="objective", dataset=data)
        players = players_of(self.model)
        self.field = GradientField(self.model, objective, players)
        rule = config.optim.rule
        self.rule = RULES.build(
            rule.name, rule.options, where="optim.rule", players=players, optim=config.optim, field=self.field
        )
        self.draw = Pool(batches)

    def step(self) -> None:
        self.rule.step(Batches(self.draw(), self.draw))


class Plain:
    """The hand-written simultaneous step of the module docstring, on its own copy of the networks."""

    def __init__(self, model: nn.Module, lr: float, betas: tuple[float, float], draw: Pool):
        self.model, self.draw = model, draw
        self.g_params = list(model.generator.parameters())
        self.d_params = list(model.discriminator.parameters())
        self.opt_g = torch.optim.Adam(self.g_params, lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.d_params, lr=lr, betas=betas)

    def step(self) -> None:
        x = self.draw().x
        fake = self.model.generator(torch.randn(len(x), self.model.latent))
        d_real, d_fake = self.model.discriminator(x), self.model.discriminator(fake)
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        loss_g = F.softplus(-d_fake).mean()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        loss_g.backward(inputs=self.g_params, retain_graph=True)
        loss_d.backward(inputs=self.d_params)
        self.opt_g.step()
        self.opt_d.step()


Clock = Callable[[], float]
CLOCKS: dict[str, Clock] = {"cpu": time.process_time, "wall": time.perf_counter}


def timed(step: Callable[[], None], n: int, clock: Clock = time.perf_counter) -> float:
    """Milliseconds per step over ``n`` steps."""
    start = clock()
    for _ in range(n):
        step()
    return (clock() - start) * 1000 / n


# ------------------------------------------------------------------------------------------ table 1: the rules


@dataclass
class RuleTimes:
    ms: list[float] = field(default_factory=list)  # per chunk; index i of every rule is the same round
    evaluations: list[float] = field(default_factory=list)  # field evaluations per step, per repeat


def time_rules(p: Problem, steps: int, chunk: int, seed: int, clock: Clock, results: dict[str, RuleTimes]) -> None:
    """All rules round-robin, ``chunk`` steps each, the starting rule rotating every round."""
    batches = draw_batches(p, seed)
    runs = {case.label: Run(p, config_for(p, case, seed), batches) for case in CASES}
    for run in runs.values():
        timed(run.step, WARMUP)
    before = {label: run.field.evaluations for label, run in runs.items()}
    labels, rounds = list(runs), steps // chunk
    for r in range(rounds):
        times = {
            label: timed(runs[label].step, chunk, clock)
            for label in labels[r % len(labels) :] + labels[: r % len(labels)]
        }
        for label in labels:
            results[label].ms.append(times[label])
    for label, run in runs.items():
        results[label].evaluations.append((run.field.evaluations - before[label]) / (rounds * chunk))


def paired(results: dict[str, RuleTimes], f: Callable[..., float], *labels: str) -> list[float]:
    """f(ms of each label in that round), for every round."""
    return [f(*ms) for ms in zip(*(results[label].ms for label in labels), strict=True)]


def spread(values: list[float], digits: int = 2) -> str:
    """Median (quartiles): on a shared machine single chunks swing, and the quartiles say by how much."""
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{q2:.{digits}f}× ({q1:.{digits}f}–{q3:.{digits}f})"


def rules_table(p: Problem, results: dict[str, RuleTimes]) -> None:
    print(f"| rule | optimizer | evaluations/step | ms/step | ×gd (quartiles) |\n|{'---|' * 2}{'---:|' * 3}")
    for case in CASES:
        res = results[case.label]
        evaluations = statistics.median(res.evaluations)
        ratios = paired(results, lambda a, b: a / b, case.label, GD.label)
        cells = [case.label, case.optimizer, f"{evaluations:g}", f"{statistics.median(res.ms):.2f}", spread(ratios)]
        print("| " + " | ".join(cells) + " |")
    rk4, reg = "ode rk4", "ode rk4 + regularizer 0.07"
    extra = statistics.median(paired(results, lambda a, b: a - b, reg, rk4))
    extra_gd = statistics.median(paired(results, lambda a, b, c: (a - b) / c, reg, rk4, GD.label))
    ratio = statistics.median(paired(results, lambda a, b: a / b, rk4, GD.label))
    ratio_sgd = statistics.median(paired(results, lambda a, b: a / b, rk4, "gd (SGD)"))
    print(f"\nODE regularizer's double backward (rk4+reg − rk4, same round): {extra:+.2f} ms/step = {extra_gd:.2f}× gd")
    verdict = "met" if ratio <= RK4_TARGET else "MISSED"
    print(f"Target RK4 without regularizer ≤ {RK4_TARGET}× gd: {verdict} ({ratio:.2f}× gd, {ratio_sgd:.2f}× gd (SGD))")


# ------------------------------------------------------------------------------------ table 2: the abstraction


@dataclass
class PairTimes:
    genbits: list[float] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)
    difference: list[float] = field(default_factory=list)  # max |Δθ| (parameters and buffers) per repeat


def pair(p: Problem, seed: int) -> tuple[Run, Plain]:
    """genbits' gd and the plain loop from the same initialization, on the same batches."""
    batches = draw_batches(p, seed)
    ours = Run(p, config_for(p, GD, seed), batches)
    return ours, Plain(copy.deepcopy(ours.model), p.lr, p.betas, Pool(batches))


def time_pair(p: Problem, steps: int, chunk: int, seed: int, clock: Clock, result: PairTimes) -> None:
    """Alternate chunks of genbits and the plain loop, both replaying the same random stream (latents)."""
    ours, plain = pair(p, seed)
    contenders = (ours.step, plain.step)
    for r in range(-1, steps // chunk):  # round −1 warms both up
        rng = torch.get_rng_state()
        times = [0.0, 0.0]
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            torch.set_rng_state(rng)
            times[i] = timed(contenders[i], chunk if r >= 0 else WARMUP, clock)
        if r >= 0:
            result.genbits.append(times[0])
            result.plain.append(times[1])
    result.difference.append(max_difference(ours.model, plain.model))


def max_difference(a: nn.Module, b: nn.Module) -> float:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return max((x.double() - y.double()).abs().max().item() for x, y in pairs)


def pair_row(p: Problem, result: PairTimes) -> float:
    """Print one row of table 2; returns genbits/plain."""
    ratios = [a / b for a, b in zip(result.genbits, result.plain, strict=True)]
    cells = [
        p.name,
        str(p.batch),
        f"{statistics.median(result.plain):.2f}",
        f"{statistics.median(result.genbits):.2f}",
        spread(ratios, 3),
        f"{max(result.difference):.1e}",
    ]
    print("| " + " | ".join(cells) + " |", flush=True)
    return statistics.median(ratios)


# ------------------------------------------------------------------------------------------------- profiling


def aten_ops(step: Callable[[], None], n: int) -> dict[str, tuple[float, float]]:
    """Per step: calls and self-CPU ms of every op the profiler sees."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    return {e.key: (e.count / n, e.self_cpu_time_total / 1000 / n) for e in prof.key_averages()}


def python_hotspots(step: Callable[[], None], n: int, top: int = 10) -> None:
    """Own (tottime) Python time per step of genbits' optim/train/objective plumbing: what a plain loop has not."""
    profiler = cProfile.Profile()
    profiler.runcall(timed, step, n)
    stats = pstats.Stats(profiler).stats
    own = [
        (tottime * 1000 / n, calls / n, f"{file.split('genbits/', 1)[-1]}:{line} {name}")
        for (file, line, name), (_, calls, tottime, _, _) in stats.items()
        if any(part in file for part in ("genbits/optim/", "genbits/train/", "genbits/objectives/"))
    ]
    total = sum(ms for ms, _, _ in own)
    print(f"\nPython time in genbits' optim/train/objectives code (cProfile, inflated by it): {total:.3f} ms/step")
    print("| function | calls/step | own ms/step |\n|---|---:|---:|")
    for ms, calls, where in sorted(own, reverse=True)[:top]:
        print(f"| {where} | {calls:g} | {ms:.3f} |")


def profile(p: Problem, seed: int, n: int) -> None:
    """Where genbits' step differs from the plain one: extra ops, and Python time in the abstraction."""
    ours, plain = pair(p, seed)
    timed(ours.step, WARMUP)
    timed(plain.step, WARMUP)
    a, b = aten_ops(ours.step, n), aten_ops(plain.step, n)
    print(
        f"\nProfile of {p.name} ({n} steps each): self CPU {sum(v[1] for v in a.values()):.2f} ms/step genbits, "
        f"{sum(v[1] for v in b.values()):.2f} plain (profiler-inflated). Ops whose calls/step differ:"
    )
    print(f"| op | genbits calls | plain calls | genbits self ms | plain self ms |\n|---|{'---:|' * 4}")
    zero = (0.0, 0.0)
    for op in sorted(a.keys() | b.keys(), key=lambda k: -abs(a.get(k, zero)[0] - b.get(k, zero)[0])):
        (ca, ma), (cb, mb) = a.get(op, zero), b.get(op, zero)
        if ca != cb:
            print(f"| {op} | {ca:g} | {cb:g} | {ma:.3f} | {mb:.3f} |")
    python_hotspots(ours.step, n)


# ------------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="timed steps per rule (and per side of a pair)")
    parser.add_argument("--chunk", type=int, default=10, help="steps per contender before the next one's turn")
    parser.add_argument("--repeats", type=int, default=2, help="fresh seeds: new initialization and batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", choices=("mlp", "dcgan"), default="mlp", help="the GAN of table 1")
    parser.add_argument("--size", type=int, default=14, help="DCGAN image size (even; 14 or 28)")
    parser.add_argument("--images", choices=("fashion-mnist", "random"), default="fashion-mnist")
    parser.add_argument("--profile", action="store_true", help="profile the DCGAN pair even when on target")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default=None,
        help="cpu: this process's CPU time, blind to time slices lost to other jobs (default with 1 thread); "
        "wall: elapsed time (default with several threads, whose CPU time would add up)",
    )
    args = parser.parse_args()
    if args.steps < args.chunk:
        parser.error("--steps must be at least --chunk")
    torch.set_num_threads(args.threads)
    clock_name = args.clock or ("cpu" if args.threads == 1 else "wall")
    clock = CLOCKS[clock_name]
    start = time.perf_counter()
    problems = {arch: problem(arch, args.size, args.images) for arch in ("mlp", "dcgan")}
    rules_problem = problems[args.arch]
    print(
        f"torch {torch.__version__}, torch.set_num_threads({args.threads}), {clock_name} clock; {args.steps} timed "
        f"steps per contender in chunks of {args.chunk}, {args.repeats} repeat(s); medians\n"
    )

    print(f"## Update rules: {rules_problem.name}, batch {rules_problem.batch}, lr {rules_problem.lr:g}\n")
    rule_results = {case.label: RuleTimes() for case in CASES}
    for r in range(args.repeats):
        time_rules(rules_problem, args.steps, args.chunk, 1000 * r, clock, rule_results)
    rules_table(rules_problem, rule_results)

    print("\n## genbits gd vs a hand-written loop (Adam, non-saturating, same modules)\n")
    header = "| model | batch | plain ms/step | genbits ms/step | genbits/plain (quartiles) | max abs Δθ |"
    print(f"{header}\n|---|{'---:|' * 5}")
    ratios = {}
    for arch, p in problems.items():
        result = PairTimes()
        for r in range(args.repeats):
            time_pair(p, args.steps, args.chunk, 1000 * r, clock, result)
        ratios[arch] = pair_row(p, result)
    ratio = ratios["dcgan"]
    verdict = "met" if ratio <= ABSTRACTION_TARGET else "MISSED"
    print(f"\nTarget DCGAN genbits ≤ {ABSTRACTION_TARGET}× plain: {verdict} ({ratio:.3f}×)")
    if args.profile or ratio > ABSTRACTION_TARGET:
        profile(problems["dcgan"], seed=0, n=max(args.chunk, 10))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
