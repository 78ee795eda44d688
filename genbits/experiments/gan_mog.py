"""Update rules and losses on the mixture-of-Gaussians toys, each against the control that makes its claim mean
something: modes captured and sample quality along training, not just at the end.

The talk: Adam with a low β1 trains GANs, "still, performance degrades later in training"; ODE-GAN (Qin et al.
2020) follows the game's continuous flow with RK4 instead of one gradient step; Rosca et al. (2021) keep SGD and
cancel the interaction terms of its discretization drift. Each arm trains the same MLP GAN from the same seeds
(presets ``gan-ring``: 8 Gaussians, radius 2, std 0.02; ``gan-grid``: 5 × 5 Gaussians, std 0.05), and every
checkpoint along the way is scored with PacGAN's metrics (Lin et al. 2018: 2,500 samples, each to its nearest mode,
high quality within 3 std, a mode captured when it holds ≥ 10 high-quality samples). Raw weights (no EMA): the
rule's own iterates.

Arms (``ARMS``; the preset's steps for all, except the equal-compute arm):

- Adam GD: simultaneous ``gd``, Adam with β = (0.5, 0.999), the presets' rule: lr 5e-3 for both players on the
  ring; on the grid 1e-3 for the generator and 4e-3 for the critic (TTUR).
- MMD-GAN: the same rule with the ``mmd-gan`` objective (Bińkowski et al. 2018: RBF-mixture MMD on critic features,
  gradient penalty 1 on the witness), beside the non-saturating loss of every other arm.
- RK4 + γ: ``ode`` method rk4, joint integration, stages on the step's batch, ODE-GAN's regularizer γ = 0.07 (the
  MoG notebook's), plain steps h = ``RK4_STEP`` (0.3 ring, 0.1 grid: single-seed pilots, ``docs/pilots.md``;
  ``gan-mog-rk4-step`` is the equal-compute sweep over h whose claim checks that they are its choices).
- Euler + γ at RK4's h: the same flow and regularizer, one field evaluation per step: does the integrator matter?
- Euler + γ at equal compute: h/4 for 4× the steps: RK4's field evaluations (4 a step) and integration horizon
  (steps × h), the comparison that RK4's extra cost calls for (the regularizer is applied at every Euler step, each
  with h/4 of the weight, so its strength per unit time is the same).
- drift-corrected SGD: ``drift``, simultaneous, cancel-interaction (multiplier −1 on both interaction terms,
  derived coefficients), plain SGD for both players, lr ``DRIFT_LR`` (0.1 ring, 0.05 grid).
- plain SGD at the same lr: the baseline the drift paper's claim is relative to.

``--full`` adds ODE-GAN's own MoG setting (``gan-mog16``: the MoG-16 notebook of its reference code, 30,000 steps,
RK4 h = 0.1 with each player integrated with the other frozen) as a third dataset, with the same arms and metrics.
The drift paper has no mixture-of-Gaussians setting to add: its reference code
(``google-deepmind/discretisation_drift``) trains on CIFAR-10 and on MNIST (``sgd_mnist_config.py``: simultaneous
SGD, lr 1e-2 for both players, saturating generator loss, batch 64, 10⁵ steps), so its arms here take that paper's
rule (cancel interaction, plain SGD) at the rates these toys train with.
The claims (``COMPARISONS``) are judged by ``RULE``, fixed here before running, on each dataset.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genbits.config import Config, load_config  # noqa: E402
from genbits.data import build_dataset  # noqa: E402
from genbits.errors import TrainingDiverged  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.experiments.threads import one_thread  # noqa: E402
from genbits.runs import Run, load_run  # noqa: E402
from genbits.runs.evaluate import evaluate, model_samples  # noqa: E402
from genbits.sweeps.parallel import cores, map_processes  # noqa: E402
from genbits.train import checkpoint, train  # noqa: E402
from genbits.train.parts import build_parts  # noqa: E402

POOLED = True  # several runs at a time: --workers applies
DATASETS = {"ring": "gan-ring", "grid": "gan-grid"}
PAPER = {"mog16": "gan-mog16"}  # ODE-GAN's own setting, its preset's size: --full runs it beside the others
GAMMA = 0.07  # ODE-GAN's regularizer in its MoG notebook
RK4_STEP = {"ring": 0.3, "grid": 0.1, "mog16": 0.1}  # ring, grid: pilots (checked by gan-mog-rk4-step); mog16: notebook
DRIFT_LR = {"ring": 0.1, "grid": 0.05, "mog16": 0.05}
INTEGRATION = {"mog16": "frozen-other"}  # the notebook integrates each player with the other frozen
RK4_EVALUATIONS = 4  # field evaluations per RK4 step: the equal-compute Euler arm takes h/4 and 4× the steps


def plain_sgd(lr: float) -> list[str]:
    """Plain steps of size lr for both players (the grid preset gives its critic a larger Adam rate)."""
    return ["optim.optimizer=sgd", f"optim.lr={lr}", f"optim.players.discriminator.lr={lr}"]


def ode(method: str, h: float, integration: str = "joint") -> list[str]:
    """ODE-GAN's flow with its regularizer, integrated by ``method`` with plain steps h."""
    rule = f"{{name: ode, method: {method}, regularizer: {GAMMA}, integration: {integration}}}"
    return [f"optim.rule={rule}", *plain_sgd(h)]


def datasets(full: bool) -> dict[str, str]:
    """Dataset → preset: the ring and the grid, and under ``full`` ODE-GAN's MoG-16 too."""
    return DATASETS | (PAPER if full else {})


@dataclass(frozen=True)
class Arm:
    """One training setting: preset overrides per dataset, and its length in multiples of the preset's steps."""

    overrides: dict[str, list[str]]
    length: int = 1


DRIFT = "optim.rule={name: drift, correction: cancel-interaction}"
ADAM, MMD, RK4 = "Adam GD", "MMD-GAN (Adam GD)", "RK4 + γ"
EULER, EULER_EQUAL = "Euler + γ, RK4's h", "Euler + γ, equal compute"
DRIFT_SGD, SGD = "drift-corrected SGD", "plain SGD"
ALL = DATASETS | PAPER


def integrated(method: str, scale: float = 1.0) -> dict[str, list[str]]:
    """Per dataset: ODE-GAN's flow by ``method`` at RK4's h × ``scale``, integrated as that setting integrates."""
    return {d: ode(method, RK4_STEP[d] * scale, INTEGRATION.get(d, "joint")) for d in ALL}


ARMS: dict[str, Arm] = {
    ADAM: Arm({d: [] for d in ALL}),
    MMD: Arm({d: ["objective={name: mmd-gan}"] for d in ALL}),
    RK4: Arm(integrated("rk4")),
    EULER: Arm(integrated("euler")),
    EULER_EQUAL: Arm(integrated("euler", 1 / RK4_EVALUATIONS), RK4_EVALUATIONS),
    DRIFT_SGD: Arm({d: [DRIFT, *plain_sgd(DRIFT_LR[d])] for d in ALL}),
    SGD: Arm({d: plain_sgd(DRIFT_LR[d]) for d in ALL}),
}


@dataclass(frozen=True)
class Comparison:
    """A claim: ``treatment`` captures more modes than ``control``."""

    claim: str
    treatment: str
    control: str


COMPARISONS = (
    Comparison("Drift correction beats plain SGD", DRIFT_SGD, SGD),
    Comparison("RK4 beats Euler at the same step", RK4, EULER),
    Comparison("RK4 beats Euler at equal compute", RK4, EULER_EQUAL),
    Comparison("RK4 beats Adam GD", RK4, ADAM),
)
MARGIN = 1  # modes
RULE = (
    f"on each dataset, modes captured at the last checkpoint, per seed (same seeds for both arms): the claim holds "
    f"if the treatment's median over seeds is at least {MARGIN} mode above the control's and it beats the control "
    f"in more than half of the seeds; it fails if the control's median is at least {MARGIN} mode above the "
    f"treatment's and the control wins more than half of the seeds; otherwise undecided. Over both datasets: holds "
    f"(fails) if it holds (fails) on both, else undecided at this budget"
)
FULL = {"steps": 20000, "model": ["model.width=256", "model.depth=3"]}
EVALUATIONS = 15  # checkpoints scored after step 0
EVAL_SAMPLES = 2500
SCATTER_SAMPLES = 2000


def run(
    run_dir: str | Path,
    seeds: int = 5,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
) -> dict[str, Any]:
    """Train every (dataset, arm, seed) in parallel processes (one per core, one thread each), score every
    checkpoint, judge every comparison, write curves.png, samples.png and table.md. Rerunning resumes unfinished
    runs. ``steps`` replaces the presets' length (the equal-compute arm takes its multiple of it)."""
    run_dir = Path(run_dir)
    start = time.perf_counter()
    results = train_arms(run_dir, ARMS, seeds, steps, full, placement, progress)
    lengths = {dataset: arms[ADAM]["steps"] for dataset, arms in results.items()}
    settings = {"seeds": seeds, "steps": lengths, "full": full, "eval_samples": EVAL_SAMPLES, "min_count": 10}
    claims = [judge(comparison, results) for comparison in COMPARISONS]
    out = {
        "claim": "; ".join(c.claim for c in COMPARISONS),
        "rule": RULE,
        "claims": claims,
        "settings": settings,
        "seconds": round(time.perf_counter() - start, 1),
        "datasets": results,
    }
    (run_dir / "results.json").write_text(json.dumps(out, indent=2))
    (run_dir / "table.md").write_text(table(out))
    curves_figure(results, run_dir / "curves.png")
    with one_thread():
        samples_figure(run_dir, list(results), run_dir / "samples.png")
    return out


def train_arms(
    run_dir: Path, arms: dict[str, Arm], seeds: int, steps: int | None, full: bool, placement: Placement, progress: bool
) -> dict[str, dict[str, Any]]:
    """Train every (dataset, arm, seed) in parallel processes, longest runs first, and score their checkpoints:
    dataset → arm → its overrides, steps, runs (curves) and summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    presets = datasets(full)
    configs = {
        (dataset, arm, seed): config_for(preset, arms[arm], dataset, placement, seed, steps, full)
        for dataset, preset in presets.items()
        for arm in arms
        for seed in range(seeds)
    }
    order = sorted(configs, key=lambda key: -configs[key].train.steps)  # longest first: the pool ends together
    calls = [(configs[key].to_dict(), str(run_dir / name(*key))) for key in order]
    tracked = {}
    with tqdm(total=len(calls), desc=run_dir.name, disable=not progress, dynamic_ncols=True) as bar:
        for (_, path), result in map_processes(track, calls, placement.pool(min(cores(), len(calls)))):
            tracked[path] = result
            bar.update()
    results: dict[str, dict[str, Any]] = {dataset: {} for dataset in presets}
    for dataset in presets:
        for arm, spec in arms.items():
            runs = [tracked[str(run_dir / name(dataset, arm, seed))] for seed in range(seeds)]
            steps_of = configs[dataset, arm, 0].train.steps
            results[dataset][arm] = {"overrides": spec.overrides[dataset], "steps": steps_of, "runs": runs}
            results[dataset][arm] |= summary(runs)
    return results


def name(dataset: str, arm: str, seed: int) -> str:
    """The sub-run directory, e.g. ring-adam-gd-s0 or ring-euler-gamma-equal-compute-s0."""
    words = re.findall(r"[a-z0-9]+", arm.lower().replace("γ", "gamma"))
    return f"{dataset}-{'-'.join(words)}-s{seed}"


def config_for(
    preset: str, arm: Arm, dataset: str, placement: Placement, seed: int, steps: int | None, full: bool
) -> Config:
    """The preset with this arm and seed; its own length (or ``steps``, or ``full``'s, except for the paper's
    setting, which keeps its own) times the arm's multiple; a checkpoint every steps/EVALUATIONS, all kept."""
    larger = full and dataset not in PAPER
    base = load_config(preset, arm.overrides[dataset] + placement.overrides() + (FULL["model"] if larger else []))
    steps = arm.length * (steps or (FULL["steps"] if larger else base.train.steps))
    every = max(1, steps // EVALUATIONS)
    schedule = [f"train.checkpoint_every={every}", f"train.keep_checkpoints={steps // every + 2}"]
    length = [f"train.seed={seed}", f"train.steps={steps}", "train.sample_every=0"]
    return load_config(base.to_dict(), schedule + length)


def track(config: dict[str, Any], path: str) -> dict[str, Any]:
    """Train on one thread (a run that diverges keeps its checkpoints so far), then score every checkpoint.

    A module-level function of plain arguments: it runs in a worker process."""
    torch.set_num_threads(1)
    config, diverged = load_config(config), None
    try:
        train(config, path, progress=False)
    except TrainingDiverged as e:
        diverged = str(e)
    return {"seed": config.train.seed, "diverged": diverged, "curve": curve(config, Path(path))}


def curve(config: Config, path: Path) -> list[dict[str, float]]:
    """Modes captured and share of high-quality samples at every checkpoint of the run in ``path``.

    After a divergence the generator outputs NaN: the checkpoints it never wrote count as 0 modes, 0% quality."""
    parts = build_parts(config)
    scored = {}
    for file in checkpoint.list_checkpoints(path / "checkpoints"):
        step, state = checkpoint.load(file, config.hash())
        parts.model.load_state_dict(state["model"])
        parts.model.eval()
        modes = evaluate(Run(path, config, parts.model, parts.dataset, step, []), EVAL_SAMPLES, ["modes"])["modes"]
        scored[step] = {"step": step, "modes": modes["modes_captured"], "high_quality": modes["high_quality"]}
    every = config.train.checkpoint_every
    planned = sorted({*range(0, config.train.steps + 1, every), config.train.steps})
    return [scored.get(step, {"step": step, "modes": 0, "high_quality": 0.0}) for step in planned]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per seed, the last checkpoint and the best trained one (most modes, then most high-quality samples; step 0
    is left out: the untrained generator sits on the grid's central mode)."""
    end = [r["curve"][-1] for r in runs]
    best = [max(r["curve"][1:], key=lambda p: (p["modes"], p["high_quality"])) for r in runs]
    return {"end": end, "best": best}


def paired_verdict(treatment: list[float], control: list[float]) -> str:
    """``RULE`` on one dataset: modes at the end per seed, paired by seed."""
    gap = statistics.median(treatment) - statistics.median(control)
    wins = sum(t > c for t, c in zip(treatment, control, strict=True))
    losses = sum(t < c for t, c in zip(treatment, control, strict=True))
    if gap >= MARGIN and wins > len(treatment) / 2:
        return "holds"
    if -gap >= MARGIN and losses > len(treatment) / 2:
        return "fails"
    return "undecided at this budget"


def overall(verdicts: list[str]) -> str:
    """Holds (fails) if it holds (fails) on every dataset, else undecided at this budget."""
    return verdicts[0] if len(set(verdicts)) == 1 else "undecided at this budget"


def judge(comparison: Comparison, results: dict[str, Any]) -> dict[str, Any]:
    """The comparison's verdict per dataset and over both, with the medians it read."""
    per_dataset = {}
    for dataset, arms in results.items():
        treatment = [p["modes"] for p in arms[comparison.treatment]["end"]]
        control = [p["modes"] for p in arms[comparison.control]["end"]]
        per_dataset[dataset] = {
            "treatment_modes": treatment,
            "control_modes": control,
            "verdict": paired_verdict(treatment, control),
        }
    verdict = overall([d["verdict"] for d in per_dataset.values()])
    return {**vars(comparison), "datasets": per_dataset, "verdict": verdict}


# ----------------------------------------------------------------------------------------------------- outputs


def table(results: dict[str, Any]) -> str:
    """Per dataset × arm: modes and % high quality at the end and at each seed's best checkpoint; then each claim
    with its control and verdict."""
    s = results["settings"]
    lines = [
        "# Update rules and losses on the MoG toys, with their controls",
        "",
        f"{s['seeds']} seeds; steps: " + ", ".join(f"{d} {n}" for d, n in s["steps"].items()) + " "
        f"(the equal-compute arm {RK4_EVALUATIONS}×); {s['eval_samples']} samples per checkpoint; "
        f"median (min–max) over seeds; {results['seconds']} s.",
        "",
        "| dataset | arm | modes, end | % HQ, end | modes, best | % HQ, best | step of best |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, arms in results["datasets"].items():
        for arm, r in arms.items():
            cells = [
                spread([p["modes"] for p in r["end"]], "{:g}"),
                spread([100 * p["high_quality"] for p in r["end"]], "{:.0f}"),
                spread([p["modes"] for p in r["best"]], "{:g}"),
                spread([100 * p["high_quality"] for p in r["best"]], "{:.0f}"),
                spread([p["step"] for p in r["best"]], "{:g}"),
            ]
            diverged = sum(run["diverged"] is not None for run in r["runs"])
            note = f" ({diverged} diverged)" if diverged else ""
            lines.append(f"| {dataset} | {arm}{note} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Rule (fixed before running): {results['rule']}.",
        "",
        "| claim | treatment | control | "
        + " | ".join(f"{d}: median modes, end" for d in results["datasets"])
        + " | verdict |",
        "|---|---|---|" + "---|" * len(results["datasets"]) + "---|",
    ]
    for c in results["claims"]:
        cells = [
            f"{statistics.median(d['treatment_modes']):g} vs {statistics.median(d['control_modes']):g} ({d['verdict']})"
            for d in c["datasets"].values()
        ]
        lines.append(
            f"| {c['claim']} | {c['treatment']} | {c['control']} | " + " | ".join(cells) + f" | {c['verdict']} |"
        )
    lines += ["", *(f"{c['claim']}. Verdict: **{c['verdict']}**." for c in results["claims"])]
    return "\n".join(lines) + "\n"


def spread(values: list[float], fmt: str) -> str:
    """median (min–max)."""
    return f"{fmt.format(np.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def curves_figure(results: dict[str, Any], path: Path) -> None:
    """Rows: datasets; columns: modes captured (out of all), % high quality, against the fraction of each arm's run
    (the equal-compute arm is 4× longer); per arm the median over seeds and its min–max band. Step 0 is left out:
    the untrained generator sits on the grid's central mode (70–90% "quality")."""
    fig, axes = plt.subplots(len(results), 2, figsize=(12, 3.8 * len(results)), squeeze=False)
    for row, (dataset, arms) in zip(axes, results.items(), strict=True):
        for i, (arm, r) in enumerate(arms.items()):
            fraction = np.array([p["step"] for p in r["runs"][0]["curve"][1:]]) / r["steps"]
            for ax, key, scale in ((row[0], "modes", 1), (row[1], "high_quality", 100)):
                values = scale * np.array([[p[key] for p in run["curve"][1:]] for run in r["runs"]])
                ax.plot(fraction, np.median(values, 0), color=f"C{i}", lw=2, label=arm)
                ax.fill_between(fraction, values.min(0), values.max(0), color=f"C{i}", alpha=0.15, lw=0)
        row[0].set_ylim(0, mode_count(dataset) + 0.5)
        row[0].set_ylabel(f"{dataset}: modes captured")
        row[1].set_ylabel(f"{dataset}: % high quality")
        for ax in row:
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("fraction of the arm's run")
    fig.suptitle("Median over seeds (bands: min–max)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def mode_count(dataset: str) -> int:
    data = load_config(ALL[dataset]).data
    return len(build_dataset(data.name, data.options).centres)


@torch.no_grad()
def samples_figure(run_dir: Path, names: list[str], path: Path) -> None:
    """Rows: datasets; columns: arms; seed 0's final samples over the mode centres."""
    fig, axes = plt.subplots(len(names), len(ARMS), figsize=(3.2 * len(ARMS), 3.4 * len(names)), squeeze=False)
    for row, dataset in zip(axes, names, strict=True):
        for ax, arm in zip(row, ARMS, strict=True):
            fitted = load_run(run_dir / name(dataset, arm, 0), ema=False)
            samples = model_samples(fitted, SCATTER_SAMPLES).numpy()
            centres = fitted.dataset.centres.numpy()
            ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4, color="C1")
            ax.scatter(centres[:, 0], centres[:, 1], s=12, color="k", marker="x")
            reach = 1.5 * np.abs(centres).max()
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
            ax.set_aspect("equal")
            ax.set_title(f"{dataset}, {arm}\n(seed 0, step {fitted.step})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
