"""The ``genbits`` command: a thin layer over the Python API (``genbits.train``, ``load_run``, ``evaluate``)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

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
        """,
    "eval": """
        For density models eval.json holds test_nll (nats) on held-out data; where the data density is known
        (the 2-D toys) also true_nll on the same samples and the gap (an estimate of KL(data ‖ model)).
        example:  genbits eval runs/flow-ring
        """,
    "report": "example:  genbits report runs/flow-ring   # writes runs/flow-ring/report.html",
    "demo": "Trains the flow-ring preset (about a minute on a laptop CPU), evaluates it and writes the report.",
    "list": "Lists the presets and every registered component with its options.",
    "experiment": """
        experiments:
          mode-seeking   forward vs reverse KL on a 0.7/0.3 mixture with one flow: mass per mode over seeds
        example:
          genbits experiment mode-seeking --run-dir runs/mode-seeking --seeds 3
        Writes results.json and figure.png into the run directory (one sub-run per preset and seed).
        """,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="genbits",
        description="Train, sample and evaluate generative models: objective × model × update rule.",
        epilog="Run `genbits COMMAND --help` for examples. Start with `genbits demo`.",
    )
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
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=3e-4 (repeatable)",
    )
    p.add_argument("--run-dir", type=Path, help="where the run lives (default: runs/<preset or file name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    p = command("sample", "draw samples from a trained run (EMA weights)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output file: .npy (raw) or .png (picture); default RUN_DIR/samples.png",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--class", dest="label", type=int, default=None, help="class label for class-conditional models")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")

    p = command("eval", "evaluate a run with its family's default metrics → eval.json")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-n", type=int, default=None, help="held-out samples (default: train.eval_samples)")

    p = command("report", "write a self-contained report.html for a run")
    p.add_argument("run_dir", type=Path)

    p = command("demo", "train a flow on the 8-Gaussian ring, evaluate it and write the report")
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")

    command("list", "list presets and registered components")

    p = command("experiment", "run a case study of the talk: figure + table in a run directory")
    p.add_argument("name", help="the experiment (see below)")
    p.add_argument("--run-dir", type=Path, default=None, help="default: runs/<name>")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: the presets')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    return top


def cmd_train(args: argparse.Namespace) -> int:
    from genbits.config import load_config
    from genbits.train.loop import train

    config = load_config(args.config, args.overrides)
    run_dir = args.run_dir or Path("runs") / Path(args.config).stem
    result = train(config, run_dir, progress=not args.no_progress)
    if result.interrupted_by is not None:
        print(
            f"stopped by signal {result.interrupted_by} at step {result.step}; checkpoint saved. "
            f"Run the same command again to resume.",
            file=sys.stderr,
        )
        return 128 + result.interrupted_by
    print(f"trained {result.step} steps → {result.run_dir}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from genbits.plots import plot_samples
    from genbits.run import load_run

    if args.n < 1:
        raise ConfigError(f"-n: {args.n} must be >= 1")
    run = load_run(args.run_dir, ema=not args.no_ema)
    if args.label is not None:
        raise GenbitsError(f"--class: the model of {args.run_dir} is not class-conditional")
    out = args.out or run.path / "samples.png"
    generator = torch.Generator().manual_seed(args.seed)
    if out.suffix == ".npy":
        with torch.no_grad():
            np.save(out, run.model.sample(args.n, generator=generator).cpu().numpy())
    elif out.suffix == ".png":
        plot_samples(run.model, run.dataset, out, generator, n=args.n)
    else:
        raise ConfigError(f"--out: {out.suffix or 'no extension'} is not supported; use .npy or .png")
    print(f"wrote {args.n} samples → {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from genbits.evaluate import evaluate, write_eval
    from genbits.run import load_run

    run = load_run(args.run_dir)
    result = evaluate(run, args.n)
    write_eval(run, result)
    for key, value in result.items():
        print(f"{key:>16}: {value:.4f}" if isinstance(value, float) else f"{key:>16}: {value}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from genbits.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from genbits.config import load_config
    from genbits.evaluate import evaluate, write_eval
    from genbits.report import write_report
    from genbits.run import load_run
    from genbits.train.loop import train

    overrides = [f"train.steps={args.steps}"] if args.steps else []
    train(load_config("flow-ring", overrides), args.run_dir)
    run = load_run(args.run_dir)
    result = evaluate(run)
    write_eval(run, result)
    report = write_report(args.run_dir)
    print(f"test NLL {result['test_nll']:.3f} nats (truth {result['true_nll']:.3f}, gap {result['gap']:.3f})")
    print(f"report: {report}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import genbits.components  # noqa: F401
    from genbits.config import COMPONENT_TABLES, presets
    from genbits.registry import describe

    print("presets:", ", ".join(presets()))
    for where, table in COMPONENT_TABLES.items():
        print(f"\n{where}:")
        for name in table.names():
            options = ", ".join(
                f"{k}={p.default!r}" if p.default is not p.empty else f"{k}: {describe(p.annotation)}"
                for k, p in table.options(name).items()
            )
            print(f"  {name:<18} {options}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from genbits.experiments import EXPERIMENTS
    from genbits.registry import closest

    if args.name not in EXPERIMENTS:
        raise ConfigError(
            f"experiment {args.name!r} is unknown{closest(args.name, EXPERIMENTS)}; available: {', '.join(EXPERIMENTS)}"
        )
    if args.seeds < 1:
        raise ConfigError(f"--seeds: {args.seeds} must be >= 1")
    run_dir = args.run_dir or Path("runs") / args.name
    results = EXPERIMENTS[args.name].run(run_dir, seeds=args.seeds, steps=args.steps, progress=not args.no_progress)
    print(json.dumps(results, indent=2))
    print(f"figure and table in {run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return globals()[f"cmd_{args.command}"](args)
    except ConfigError as e:
        print(f"genbits: config error: {e}", file=sys.stderr)
        return 2
    except GenbitsError as e:
        print(f"genbits: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
