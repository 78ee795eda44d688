"""Sweeps: a grid of config overrides × seeds, run as independent, resumable runs, each judged by its loss curve.

``genbits sweep CONFIG --grid optim.lr=1e-4,1e-3 --grid model.layers=2,4 --seeds 5`` writes::

    SWEEP_DIR/sweep.json                  what the sweep is (config, grid, seeds, rules); another sweep is refused
    SWEEP_DIR/lr=1e-4,layers=2/seed0/     a normal run directory, plus status.json when the run is finished:
                                          outcome, reason, initial_loss, final {loss, test_nll}, metric (the
                                          name of the final metric), step, wall_time (of the job that finished it)
    SWEEP_DIR/summary.json                every run's grid point, seed and status

Every run is one call of ``run_job`` (a top-level function, so it pickles): a local process pool or a Ray cluster
maps it over the runs. A run with a status.json is finished and skipped; any other run is started again and
``train`` resumes it from its newest checkpoint.

Outcome of a run, from its logged training loss (``OutcomeRules``; L0 = the first logged loss, L = the mean of the last
10% of logged losses, scale = max(|L0|, 1) so that a loss near zero, e.g. an NLL crossing 0, is judged on an
absolute scale):

  diverged   a non-finite loss stopped training (TrainingDiverged), or L is not finite, or L - L0 > 10 × scale
  stalled    otherwise, if L0 - L < 0.05 × scale (the loss fell by less than 5% of scale)
  converged  otherwise

A diverged run is a result: it is recorded and the sweep goes on. Finished runs that did not diverge are evaluated
(``genbits.runs.evaluate``, which also writes their eval.json); their final metric is ``test_nll`` where the model has a
likelihood, else L.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genbits.config import diff, load_config
from genbits.errors import ConfigError, GenbitsError, TrainingDiverged
from genbits.models.base import Density
from genbits.runs import load_run
from genbits.runs.evaluate import evaluate, write_eval
from genbits.sweeps.parallel import cores, map_processes
from genbits.train.loop import train
from genbits.train.rundir import RunDir

SPEC, SUMMARY, STATUS = "sweep.json", "summary.json", "status.json"
EXECUTORS = ("local", "ray")
OUTCOMES = ("converged", "stalled", "diverged")

# what one job gets: base config (plain mapping), overrides, run dir, torch threads, outcome rules
Call = tuple[dict[str, Any], list[str], str, int, "OutcomeRules"]


@dataclass(frozen=True)
class OutcomeRules:
    """Thresholds that turn a loss curve into an outcome (see the module docstring); part of a sweep's identity."""

    loss_key: str = "loss"  # the logged metric judged; a game logs loss/<player>
    tail: float = 0.1  # L is the mean of this last fraction of the logged losses
    stall: float = 0.05  # stalled: L0 - L < stall × scale
    explode: float = 10.0  # diverged: L - L0 > explode × scale

    def check(self) -> None:
        if not 0 < self.tail <= 1:
            raise ConfigError(f"--tail: {self.tail} is out of range; allowed: > 0 and <= 1")
        if self.stall < 0:
            raise ConfigError(f"--stall: {self.stall} is out of range; allowed: >= 0")
        if self.explode <= 0:
            raise ConfigError(f"--explode: {self.explode} is out of range; allowed: > 0")


@dataclass
class SweepRun:
    """One (grid point, seed): the overrides that make its config from the base config, and where it lives."""

    point: str  # the grid point's directory name, e.g. "lr=1e-3,layers=4"
    seed: int
    overrides: list[str]
    values: dict[str, Any]  # every grid key's resolved value (numbers as numbers, for the plots)

    @property
    def name(self) -> str:
        return f"{self.point}/seed{self.seed}"


@dataclass
class SweepResult:
    path: Path
    runs: list[dict[str, Any]]  # summary rows: run, point, seed, values, status (None while unfinished)
    ran: list[str]  # runs finished by this call
    skipped: list[str]  # runs already finished before it
    interrupted: bool = False

    def counts(self) -> Counter:
        return outcome_counts(self.runs)


# ---- judging one run -------------------------------------------------------------------------------------------


def judge(losses: Sequence[float], rules: OutcomeRules) -> dict[str, Any]:
    """Outcome, reason and the losses it rests on, by the rules of the module docstring."""
    initial = losses[0]
    tail = losses[-max(1, math.ceil(rules.tail * len(losses))) :]
    final = sum(tail) / len(tail)
    scale = max(abs(initial), 1.0)
    if not math.isfinite(final) or final - initial > rules.explode * scale:
        outcome, why = "diverged", f"rose by more than {rules.explode:g} × max(|initial|, 1)"
    elif initial - final < rules.stall * scale:
        outcome, why = "stalled", f"did not fall by {rules.stall:g} × max(|initial|, 1)"
    else:
        outcome, why = "converged", "fell"
    return {
        "outcome": outcome,
        "reason": f"{rules.loss_key} {initial:.4g} → {final:.4g} (mean of last {len(tail)} logged): {why}",
        "initial_loss": finite_or_none(initial),
        "final": {"loss": finite_or_none(final)},
    }


def logged_losses(run: RunDir, key: str) -> list[float]:
    losses = [r[key] for r in run.metrics() if "event" not in r and key in r]
    if not losses:
        logged = sorted({k for r in run.metrics() for k in r} - {"step", "samples", "time", "event"})
        raise ConfigError(f"--loss-key {key!r}: not logged in {run.metrics_file}; logged: {', '.join(logged)}")
    return losses


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf: a non-finite number is recorded as null."""
    return value if math.isfinite(value) else None


def evaluation(path: Path) -> dict[str, float | None]:
    """test_nll from the run's default evaluation, also written to eval.json as `genbits eval` does. Only density
    models are evaluated: for them it is cheap, and test_nll is the one metric the sweep plots besides the loss."""
    run = load_run(path)
    if not isinstance(run.model, Density):
        return {}
    result = evaluate(run)
    write_eval(run, result)
    return {k: finite_or_none(result[k]) for k in ("test_nll", "bits_per_dim") if k in result}


def run_job(
    source: dict[str, Any] | str,
    overrides: list[str],
    run_dir: str,
    threads: int = 0,
    rules: OutcomeRules | None = None,
) -> dict[str, Any]:
    """Train (or resume), judge and evaluate one run, and write its status.json.

    One top-level function serves every executor, so the local pool and Ray run exactly the same thing.
    ``threads`` pins torch's intra-op threads outside the config (``run_sweep`` keeps a sweep's first choice when
    it resumes), so changing --workers does not change a run.
    """
    rules = rules or OutcomeRules()
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    run = RunDir(run_dir)
    try:
        result = train(load_config(source, overrides), run.path, progress=False)
    except TrainingDiverged as e:
        status: dict[str, Any] = {"outcome": "diverged", "reason": str(e), "final": {}}
        step = max((r["step"] for r in run.metrics()), default=0)  # the last logged step
    else:
        if result.interrupted_by is not None:  # checkpointed by train; no status: the next sweep resumes it
            return {"outcome": "interrupted", "step": result.step}
        status = judge(logged_losses(run, rules.loss_key), rules)
        step = result.step
        if status["outcome"] != "diverged":
            status["final"].update(evaluation(run.path))
    status["metric"] = next((k for k in ("test_nll", "loss") if status["final"].get(k) is not None), None)
    status.update(step=step, wall_time=round(time.perf_counter() - start, 3))
    (run.path / STATUS).write_text(json.dumps(status, indent=2))
    return status


# ---- planning a sweep ------------------------------------------------------------------------------------------


def parse_grid(texts: Sequence[str]) -> dict[str, list[str]]:
    """``key=v1,v2`` texts → {key: [v1, v2]}, values as typed (they become ``--set key=v`` overrides)."""
    grid: dict[str, list[str]] = {}
    for text in texts:
        key, sep, values = (part.strip() for part in text.partition("="))
        if not sep or not key or not values:
            raise ConfigError(f"--grid {text!r}: expected section.field=v1,v2,..., e.g. --grid optim.lr=1e-4,1e-3")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        if key == "train.seed":
            raise ConfigError("--grid train.seed: seeds come from --seeds")
        grid[key] = split_values(values)
        if "" in grid[key] or len(set(grid[key])) < len(grid[key]):
            raise ConfigError(f"--grid {text!r}: values must be non-empty and distinct")
    return grid


def split_values(text: str) -> list[str]:
    """Split at commas outside brackets, so a list is one value: ``[32,32],[64,64]`` → two values."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    return [*values, current.strip()]


def short_labels(keys: Sequence[str]) -> dict[str, str]:
    """The last part of each dotted key (``optim.lr`` → ``lr``), or the whole key where that part is ambiguous."""
    last = Counter(k.rsplit(".", 1)[-1] for k in keys)
    return {k: k.rsplit(".", 1)[-1] if last[k.rsplit(".", 1)[-1]] == 1 else k for k in keys}


def point_name(grid: dict[str, list[str]], values: Sequence[str]) -> str:
    """A readable directory name, e.g. ``lr=1e-3,norm=spectral``; characters a filesystem may dislike become _."""
    labels = short_labels(list(grid))
    name = ",".join(f"{labels[k]}={v}" for k, v in zip(grid, values, strict=True)) or "base"
    return re.sub(r"[^\w.,=+-]", "_", name)


def lookup(plain: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(plain, dict) or part not in plain:
            return None
        plain = plain[part]
    return plain


def plan(base: dict[str, Any], grid: dict[str, list[str]], seeds: int) -> list[SweepRun]:
    """Every (grid point, seed) with its config validated, so a bad grid fails before anything runs."""
    runs = []
    for values in itertools.product(*grid.values()):
        point = point_name(grid, values)
        for seed in range(seeds):
            overrides = [f"{k}={v}" for k, v in zip(grid, values, strict=True)] + [f"train.seed={seed}"]
            try:
                plain = load_config(base, overrides).to_dict()
            except ConfigError as e:
                raise ConfigError(f"--grid point {point}: {e}") from None
            runs.append(SweepRun(point, seed, overrides, {k: lookup(plain, k) for k in grid}))
    if len({r.point for r in runs}) * seeds < len(runs):
        raise ConfigError(
            "--grid: two grid points map to the same directory name; make the values differ in letters or digits"
        )
    return runs


# ---- the sweep directory ---------------------------------------------------------------------------------------


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / SPEC).exists()


def read_spec(sweep_dir: str | Path) -> dict[str, Any]:
    if not is_sweep(sweep_dir):
        raise GenbitsError(f"{sweep_dir} is not a sweep directory (no {SPEC}); start one with `genbits sweep`")
    return json.loads((Path(sweep_dir) / SPEC).read_text())


def claim(sweep_dir: Path, spec: dict[str, Any]) -> None:
    """Write sweep.json, after checking that an existing sweep there is the same one (else two would mix)."""
    if is_sweep(sweep_dir):
        old = read_spec(sweep_dir)
        changed = [f"config.{k}" for k in diff(load_config(old["config"]), load_config(spec["config"]))]
        changed += [k for k in ("grid", "seeds", "rules") if json.dumps(old[k]) != json.dumps(spec[k])]
        if changed:
            raise ConfigError(
                f"{sweep_dir} already holds a different sweep (changed: {', '.join(changed)}); use a new --run-dir"
            )
    elif sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise ConfigError(f"{sweep_dir} exists and is not a sweep directory (no {SPEC}); use a new --run-dir")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SPEC).write_text(json.dumps(spec, indent=2))


def read_status(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATUS
    return json.loads(path.read_text()) if path.exists() else None


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per planned run with its status (None while unfinished), read from the run directories."""
    spec = read_spec(sweep_dir)
    return [
        {
            "run": r.name,
            "point": r.point,
            "seed": r.seed,
            "values": r.values,
            "status": read_status(Path(sweep_dir) / r.name),
        }
        for r in plan(spec["config"], spec["grid"], spec["seeds"])
    ]


def outcome_counts(rows: list[dict[str, Any]]) -> Counter:
    return Counter(row["status"]["outcome"] if row["status"] else "unfinished" for row in rows)


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = collect(sweep_dir)
    summary = {"counts": dict(outcome_counts(rows)), "runs": rows}
    (sweep_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    return rows


# ---- executors: two ways to map run_job ------------------------------------------------------------------------


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GenbitsError("--executor ray needs Ray: pip install 'genbits[ray]'") from None
    return ray


def map_ray(calls: list[Call], threads: int, address: str | None) -> Iterator[tuple[Call, dict[str, Any]]]:
    """One Ray task per run, ``threads`` CPUs each; joins a running Ray (``address``, or one already initialised
    in this process) or starts a local one. The sweep directory must be on a filesystem every node sees."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address)
    elif started:
        ray.init(include_dashboard=False)
    job = ray.remote(num_cpus=threads)(run_job)
    pending = {job.remote(*call): call for call in calls}
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(ref), ray.get(ref)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        raise
    finally:
        if started:
            ray.shutdown()


def map_calls(
    calls: list[Call], executor: str, workers: int, threads: int, address: str | None
) -> Iterator[tuple[Call, dict[str, Any]]]:
    """(call, status) pairs as runs finish, from the chosen executor; nothing starts when there is nothing to run."""
    if not calls:
        return iter(())
    return (
        map_ray(calls, threads, address)
        if executor == "ray"
        else map_processes(run_job, calls, min(workers, len(calls)))
    )


def default_threads(executor: str, workers: int) -> int:
    """Locally the cores are shared out between workers; on Ray each task asks for one CPU unless told."""
    if executor == "ray":
        return 1
    return max(1, cores() // workers)


# ---- the sweep -------------------------------------------------------------------------------------------------


def run_sweep(
    source: str | Path,
    grid: Sequence[str],
    sweep_dir: str | Path,
    seeds: int = 1,
    overrides: Sequence[str] = (),
    executor: str = "local",
    workers: int = 1,
    threads: int | None = None,
    address: str | None = None,
    rules: OutcomeRules | None = None,
    progress: bool = True,
) -> SweepResult:
    """Validate every run's config, then run the unfinished ones; a diverged run is recorded, not raised.

    ``grid`` holds ``key=v1,v2`` texts (as ``--grid``), ``overrides`` ``key=value`` texts applied to every run.
    """
    rules = rules or OutcomeRules()
    rules.check()
    check_options(seeds, executor, workers, threads, address)
    base_config = load_config(source, overrides)
    base, parsed = base_config.to_dict(), parse_grid(grid)
    runs = plan(base, parsed, seeds)
    sweep_dir = Path(sweep_dir)
    spec = {"source": str(source), "overrides": list(overrides), "config": base, "grid": parsed, "seeds": seeds}
    # a resumed sweep keeps its first threads: on some CPUs 1 and 2 threads round differently, so a run resumed
    # under another --workers would not continue as if never interrupted
    earlier = read_spec(sweep_dir).get("threads") if is_sweep(sweep_dir) else None
    threads = threads or base_config.train.threads or earlier or default_threads(executor, workers)
    claim(sweep_dir, {**spec, "rules": asdict(rules), "executor": executor, "threads": threads})
    finished = {r.name: status for r in runs if (status := read_status(sweep_dir / r.name)) is not None}
    todo = [r for r in runs if r.name not in finished]
    calls: list[Call] = [(base, r.overrides, str(sweep_dir / r.name), threads, rules) for r in todo]
    names = {call[2]: r.name for call, r in zip(calls, todo, strict=True)}
    counts = Counter(status["outcome"] for status in finished.values())
    bar = tqdm(total=len(runs), initial=len(finished), desc="sweep", unit="run", disable=not progress)
    ran, interrupted = [], False
    try:
        for call, status in map_calls(calls, executor, workers, threads, address):
            interrupted |= status["outcome"] == "interrupted"
            if status["outcome"] in OUTCOMES:
                ran.append(names[call[2]])
                counts[status["outcome"]] += 1
                bar.update(1)
                bar.set_postfix(counts)
    except KeyboardInterrupt:  # the runs in flight got the signal too: they checkpoint, the next sweep resumes
        interrupted = True
    finally:
        bar.close()
        rows = write_summary(sweep_dir)
    return SweepResult(sweep_dir, rows, ran, list(finished), interrupted)


def check_options(seeds: int, executor: str, workers: int, threads: int | None, address: str | None) -> None:
    if seeds < 1:
        raise ConfigError(f"--seeds: {seeds} must be >= 1")
    if workers < 1:
        raise ConfigError(f"--workers: {workers} must be >= 1")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: {threads} must be >= 1")
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        raise ConfigError("--address: only with --executor ray")
    if executor == "ray":
        import_ray()  # a missing extra is reported before anything is written
