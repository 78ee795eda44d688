"""genbits flows vs zuko and normflows on the ring of 8 Gaussians, pair by pair at equal architecture.

    python benchmarks/flows2d.py [--steps 2000] [--repeats 3] [--chunk 50] [--threads 1]

Every model trains by maximum likelihood (Adam, lr 1e-3, batch 512) on the same batches. The two models of a
pair train in alternating chunks of steps in this one process, so machine noise hits both. steps/s is the
median over all chunks of all repeats, timing the training step only (forward, backward, Adam). Test NLL is on
the same 10k fresh samples for all, with the live weights and with an EMA of them (genbits' training loop
evaluates the EMA). Each repeat draws new seeds for initialization and data. One thread by default: at batch
512 in 2-D a step is dispatcher-bound, a second thread only adds synchronization (and this machine has two
cores shared with other work).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import normflows as nf
import torch
import zuko
from torch import Tensor, nn

from genbits.models.flows import flow, num_parameters
from genbits.train.ema import EMA

RADIUS, STD, MODES, BATCH, TEST = 2.0, 0.02, 8, 512, 10_000
TRUE_NLL = math.log(MODES) + math.log(2 * math.pi * math.e * STD**2)  # ≈ −2.907 nats: modes barely overlap


def ring(n: int, generator: torch.Generator) -> Tensor:
    """n points from the ring of 8 Gaussians (radius 2, std 0.02)."""
    k = torch.randint(0, MODES, (n,), generator=generator)
    angle = 2 * math.pi * k / MODES
    centres = RADIUS * torch.stack((angle.cos(), angle.sin()), dim=1)
    return centres + STD * torch.randn(n, 2, generator=generator)


@dataclass
class Contender:
    """One model under test: how to build it and how to read its log-density."""

    name: str
    build: Callable[[], nn.Module]
    log_prob: Callable[[nn.Module, Tensor], Tensor]


@dataclass
class Result:
    params: int = 0
    rates: list[float] = field(default_factory=list)  # steps/s of each chunk
    nll: list[float] = field(default_factory=list)
    nll_ema: list[float] = field(default_factory=list)


def genbits(**options: object) -> Contender:
    return Contender(
        f"genbits flow({', '.join(f'{k}={v!r}' for k, v in options.items()) or 'defaults'})",
        lambda: flow((2,), **options),
        lambda m, x: m.log_prob(x),
    )


def zuko_flow(cls: type, **options: object) -> Contender:
    return Contender(
        f"zuko {cls.__name__}(transforms=5, hidden 64×64)",
        lambda: cls(2, transforms=5, hidden_features=(64, 64), **options),
        lambda m, x: m().log_prob(x),
    )


def normflows_realnvp() -> nf.NormalizingFlow:
    """normflows' RealNVP recipe (README): affine coupling blocks with exp scale, swap permutations."""
    layers: list[nn.Module] = []
    for _ in range(5):
        net = nf.nets.MLP([1, 64, 64, 2], init_zeros=True)
        layers += [nf.flows.AffineCouplingBlock(net), nf.flows.Permute(2, "swap")]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), layers[:-1])


SAME = dict(layers=5, hidden=(64, 64), actnorm=False)
PAIRS: list[tuple[Contender, Contender]] = [
    (genbits(transform="maf", **SAME), zuko_flow(zuko.flows.MAF)),
    (genbits(transform="spline-ar", bins=8, bound=5.0, **SAME), zuko_flow(zuko.flows.NSF, bins=8)),
    (
        genbits(transform="affine-coupling", **SAME),
        Contender("normflows RealNVP(5 blocks, hidden 64×64)", normflows_realnvp, lambda m, x: m.log_prob(x)),
    ),
    (genbits(), zuko_flow(zuko.flows.NSF, bins=8)),
]


class Run:
    """One model in training, with its optimizer and its EMA."""

    def __init__(self, contender: Contender, seed: int):
        torch.manual_seed(seed)
        self.contender, self.model = contender, contender.build()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.ema = EMA(self.model, 0.999)

    def train(self, batches: list[Tensor]) -> float:
        """Steps/s over ``batches``, timing forward, backward and Adam (not the EMA update)."""
        elapsed = 0.0
        for x in batches:
            tic = time.perf_counter()
            loss = -self.contender.log_prob(self.model, x).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            elapsed += time.perf_counter() - tic
            self.ema.update(self.model)
        return len(batches) / elapsed

    def nll(self, x: Tensor) -> float:
        self.model.eval()
        with torch.no_grad():
            nll = -self.contender.log_prob(self.model, x).mean().item()
        self.model.train()
        return nll


def run_pair(pair: tuple[Contender, Contender], steps: int, chunk: int, seed: int, results: list[Result]) -> None:
    """Train both models of a pair on the same batches, alternating chunks of ``chunk`` steps."""
    data = torch.Generator().manual_seed(seed)
    batches = [ring(BATCH, data) for _ in range(steps)]
    test = ring(TEST, torch.Generator().manual_seed(10_000 + seed))
    runs = [Run(contender, seed + i) for i, contender in enumerate(pair)]
    for start in range(0, steps, chunk):
        for run, result in zip(runs, results, strict=True):
            result.rates.append(run.train(batches[start : start + chunk]))
    for run, result in zip(runs, results, strict=True):
        result.params = num_parameters(run.model)
        result.nll.append(run.nll(test))
        with run.ema.swapped_in(run.model):
            result.nll_ema.append(run.nll(test))


def nll_cell(values: list[float]) -> tuple[str, str]:
    """Median NLL and gap to the truth, with the gap's range over repeats; NaN runs counted, not averaged."""
    finite = [v - TRUE_NLL for v in values if math.isfinite(v)]
    bad = len(values) - len(finite)
    if not finite:
        return f"NaN ({bad}/{len(values)})", "—"
    gap = statistics.median(finite)
    spread = f" ({min(finite):+.3f}…{max(finite):+.3f})" if len(finite) > 1 else ""
    note = f", NaN in {bad}/{len(values)}" if bad else ""
    return f"{TRUE_NLL + gap:.3f}{note}", f"{gap:+.3f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=50, help="steps per model before switching to its peer")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, zuko {zuko.__version__}, normflows {nf.__version__}; "
        f"torch.set_num_threads({args.threads})"
    )
    print(
        f"ring of 8 Gaussians (radius 2, std 0.02), true NLL {TRUE_NLL:.3f} nats; Adam 1e-3, "
        f"batch {BATCH}, {args.steps} steps in chunks of {args.chunk}, {args.repeats} repeat(s); "
        "genbits/peer = median ratio of paired chunks; NLL = median over repeats, (min…max) of the gaps; "
        "EMA decay 0.999\n"
    )
    print("| pair | model | params | steps/s | genbits/peer | NLL | gap | NLL (EMA) | gap (EMA) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for p, pair in enumerate(PAIRS, start=1):
        results = [Result(), Result()]
        for r in range(args.repeats):
            run_pair(pair, args.steps, args.chunk, seed=1000 * r, results=results)
        rates = [statistics.median(res.rates) for res in results]
        ratio = statistics.median(a / b for a, b in zip(*(res.rates for res in results), strict=True))
        for i, (contender, res) in enumerate(zip(pair, results, strict=True)):
            cells = [
                str(p),
                contender.name,
                f"{res.params:,}",
                f"{rates[i]:.1f}",
                f"**{ratio:.2f}×**" if i == 0 else "",
            ]
            cells += [*nll_cell(res.nll), *nll_cell(res.nll_ema)]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
