"""genbits' diffusion UNet vs diffusers' UNet2DModel of the same architecture: training step and DDIM sampling.

    python benchmarks/diffusion.py [--repeats 5] [--batch 64] [--threads 2] [--device cpu|cuda] [--quick]
    python benchmarks/diffusion.py --fid-vs-nfe RUN_DIR [-n 1000] [--threads 2]

Both nets have the architecture of ``ARCH`` at 28×28 (class-conditional, 10 classes + the null class): the same
layer shapes and parameter count (printed; tests/test_unet.py shows that with the same weights they compute the
same function). genbits uses its default group norm (8 channels a group), diffusers ``norm_num_groups=8``.

(a) Training step, samples/s: genbits = the ``diffusion`` model's ``denoising`` objective (noising by its
schedule, ε-MSE) + backward + Adam; diffusers = ``DDPMScheduler.add_noise`` + ``UNet2DModel`` + ε-MSE + backward
+ Adam, on the same batches (uniform noise images and labels; speed does not depend on content). The two alternate
step by step in this one process, so machine noise hits both; medians over ``--repeats`` × 3 steps after one
warm-up step each. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over one step; on CPU the growth of
the peak resident set size (``ru_maxrss``) over one step, measured in a forked child per contender (the peak of a
process never goes down, so it cannot be read twice in one process).

(b) Sampling time of DDIM with 50 network evaluations for a batch of 64 (η = 0, class-conditional, no guidance):
genbits = ``model.sample(64, y, sampler="ddim", steps=50)``; diffusers = ``DDIMScheduler`` (50 steps) looping over
``UNet2DModel``. Alternating, median of ``--repeats`` runs each.

(c) ``--fid-vs-nfe RUN_DIR``: FID against NFE for every sampler on a trained image run (e.g. ``genbits train
diffusion-digits --run-dir RUN_DIR``), n samples per setting (seed 0) scored as ``genbits eval`` scores them (the
dataset's shipped features, the test split), and the issue's target read by ``genbits experiment diffusion-samplers``'
rule: the best sampler at ≤ 25 NFE within 10% of 1000-step ancestral FID.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable

import diffusers
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.experiments.diffusion_samplers import decide
from genbits.models.diffusion import Diffusion, diffusion
from genbits.objectives.denoising import Denoising
from genbits.runs import load_run
from genbits.runs.evaluate import sample_metrics

SHAPE, CLASSES, T = (1, 28, 28), 10, 1000
ARCH = {"channels": 32, "multipliers": [1, 2, 2], "num_res_blocks": 2, "attention": [7], "head_dim": 32}
QUICK = {"channels": 16, "multipliers": [1, 2], "num_res_blocks": 1, "attention": [14], "head_dim": 16}
FID_NFES = {"ddpm": [25, 100, 1000], "ddim": [10, 25, 50], "heun": [9, 25, 49], "dpm-solver++": [10, 25, 50]}


def genbits_model(arch: dict) -> Diffusion:
    return diffusion(SHAPE, CLASSES, None, net="unet", net_options=arch, steps=T, conditional=True)


def diffusers_model(model: Diffusion) -> nn.Module:
    return diffusers.UNet2DModel(**model.net.diffusers_config(groups=8))


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Trainer:
    """One contender's training step on a batch (x in [0, 1], labels)."""

    def __init__(self, net: nn.Module, loss: Callable[[Tensor, Tensor], Tensor]):
        self.net, self.loss = net.train(), loss
        self.optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)

    def step(self, x: Tensor, y: Tensor) -> float:
        """Seconds for loss, backward and Adam (synchronized on CUDA)."""
        sync(x.device)
        tic = time.perf_counter()
        loss = self.loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        sync(x.device)
        return time.perf_counter() - tic


def genbits_trainer(model: Diffusion) -> Trainer:
    objective = Denoising()

    def loss(x: Tensor, y: Tensor) -> Tensor:
        from genbits.data.base import Batch

        return objective(model, Batch(x, y)).per_player["model"]

    return Trainer(model, loss)


def diffusers_trainer(unet: nn.Module) -> Trainer:
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)

    def loss(x: Tensor, y: Tensor) -> Tensor:
        x0, eps = x * 2 - 1, torch.randn_like(x)
        t = torch.randint(0, T, (len(x),), device=x.device)
        return F.mse_loss(unet(scheduler.add_noise(x0, eps, t), t, class_labels=y).sample, eps)

    return Trainer(unet, loss)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(trainer: Trainer, x: Tensor, y: Tensor) -> float:
    """MiB: CUDA peak allocation over one step, or the CPU peak-RSS growth over one step in a forked child."""
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        trainer.step(x, y)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()

    def child() -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        trainer.step(x, y)
        queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)  # KiB → MiB

    process = context.Process(target=child)
    process.start()
    process.join()
    return queue.get()


def ddim_genbits(model: Diffusion, y: Tensor) -> Callable[[], Tensor]:
    return lambda: model.sample(len(y), y, torch.Generator().manual_seed(0), sampler="ddim", steps=50)


def ddim_diffusers(unet: nn.Module, y: Tensor) -> Callable[[], Tensor]:
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=T)
    scheduler.set_timesteps(50)

    def run() -> Tensor:
        x = torch.randn((len(y), *SHAPE), generator=torch.Generator().manual_seed(0)).to(y.device)
        for t in scheduler.timesteps:
            eps = unet(x, t.to(y.device), class_labels=y).sample
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        return (x + 1) / 2

    return run


def timed(run: Callable[[], Tensor], device: torch.device) -> float:
    sync(device)
    tic = time.perf_counter()
    with torch.no_grad():
        run()
    sync(device)
    return time.perf_counter() - tic


def fid_vs_nfe(run_dir: str, n: int, nfes: dict[str, list[int]] = FID_NFES) -> None:
    """(c): every sampler at each NFE of ``nfes`` on the trained run, FID of n samples; prints the table and the
    verdict of the few-step target."""
    run = load_run(run_dir)
    print(f"run {run_dir} ({run.config.data.name}, {type(run.model.schedule).__name__}), {n} samples per setting")
    print("\n| sampler | NFE | FID | seconds |\n|---|---:|---:|---:|")
    scores = {}
    for sampler, values in nfes.items():
        for nfe in values:
            tic = time.perf_counter()
            result = sample_metrics(run, ["fid"], None, n, how={"sampler": sampler, "steps": nfe})
            seconds = time.perf_counter() - tic
            scores[f"{sampler}@{nfe}"] = {"sampler": sampler, "nfe": nfe, "fid": result["fid"]}
            print(f"| {sampler} | {nfe} | {result['fid']:.3f} | {seconds:.0f} |", flush=True)
    verdict = decide(scores)
    print(
        f"\nFID(ddpm, 1000) = {verdict['reference_fid']:.3f}; best at <= 25 NFE: {verdict['best_few_step']} with "
        f"{verdict['best_few_step_fid']:.3f} ({verdict['best_few_step_fid'] / verdict['reference_fid']:.2f}×). "
        f"Target (within 10%): **{verdict['verdict']}**."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a tiny UNet (a smoke run of this script)")
    parser.add_argument("--fid-vs-nfe", metavar="RUN_DIR", help="(c) only: FID vs NFE on this trained image run")
    parser.add_argument("-n", type=int, default=1000, help="(c): samples per setting")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.fid_vs_nfe:
        fid_vs_nfe(args.fid_vs_nfe, args.n)
        return
    device = torch.device(args.device)
    arch = QUICK if args.quick else ARCH
    torch.manual_seed(0)
    ours = genbits_model(arch).to(device)
    theirs = diffusers_model(ours).to(device)
    params = parameters(ours), parameters(theirs)
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}; {device}, {args.threads} thread(s)")
    print(f"UNet {arch} at {SHAPE}, {CLASSES} classes; parameters: genbits {params[0]:,}, diffusers {params[1]:,}")
    generator = torch.Generator().manual_seed(1)
    x = torch.rand((args.batch, *SHAPE), generator=generator).to(device)
    y = torch.randint(0, CLASSES, (args.batch,), generator=generator).to(device)

    trainers = genbits_trainer(ours), diffusers_trainer(theirs)
    memory = [peak_memory(trainer, x, y) for trainer in trainers]
    for trainer in trainers:
        trainer.step(x, y)  # warm-up
    times: list[list[float]] = [[], []]
    for _ in range(3 * args.repeats):
        for i, trainer in enumerate(trainers):
            times[i].append(trainer.step(x, y))
    ratios = [b / a for a, b in zip(*times, strict=True)]

    samplers = ddim_genbits(ours.eval(), y), ddim_diffusers(theirs.eval(), y)
    sample_times: list[list[float]] = [[], []]
    for _ in range(args.repeats):
        for i, run in enumerate(samplers):
            sample_times[i].append(timed(run, device))
    sample_ratios = [b / a for a, b in zip(*sample_times, strict=True)]

    unit = "peak CUDA alloc" if device.type == "cuda" else "peak RSS growth"
    print(f"\n(a) training step, batch {args.batch}; median of {len(ratios)} alternating steps\n")
    print(f"| | params | samples/s | genbits/diffusers | {unit} (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for i, name in enumerate(("genbits UNet + denoising", "diffusers UNet2DModel + add_noise")):
        rate = args.batch / statistics.median(times[i])
        ratio = f"**{statistics.median(ratios):.2f}×**" if i == 0 else ""
        print(f"| {name} | {params[i]:,} | {rate:.1f} | {ratio} | {memory[i]:.0f} |")
    print(f"\n(b) DDIM, 50 network evaluations, batch {args.batch}; median of {args.repeats} alternating runs\n")
    print("| | seconds | genbits speed-up |")
    print("|---|---:|---:|")
    for i, name in enumerate(("genbits model.sample(sampler=ddim, steps=50)", "diffusers DDIMScheduler loop")):
        ratio = f"**{statistics.median(sample_ratios):.2f}×**" if i == 0 else ""
        print(f"| {name} | {statistics.median(sample_times[i]):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
