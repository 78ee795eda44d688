"""What ``genbits list`` and ``genbits runs`` print: the catalogue of what can be run, and the runs that exist.

Both read what genbits already declares (preset comments, experiment docstrings, factory signatures, model
``SAMPLING_OPTIONS``, run directories) rather than a hand-kept list that could drift from the code.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from pathlib import Path
from typing import Any, Literal

from genbits.config import COMPONENT_TABLES, PRESET_DIR, Config, components, load_config, presets
from genbits.registry import MODELS, Registry
from genbits.train import checkpoint
from genbits.train.rundir import RunDir

KINDS = {"data": "datasets", "model": "models", "objective": "objectives", "optim.rule": "update rules"}


def summary_line(text: str | None, width: int = 96) -> str:
    """The first sentence (or line) of a docstring or comment, cut to ``width`` characters."""
    first = " ".join((text or "").strip().split("\n\n")[0].split())
    first = re.split(r"(?<!et al)\.\s+(?=[A-Z(])", first)[0].rstrip(".")
    return first if len(first) <= width else first[: width - 1] + "…"


def preset_description(name: str) -> str:
    """A preset's leading comment, which says what it trains and why."""
    lines = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# "))
    return summary_line(" ".join(comment))


def option_text(parameter: inspect.Parameter, hint: Any) -> str:
    """``name=default``, with the allowed values of a fixed set: ``norm='batch' (none|batch|layer)``."""
    default = "" if parameter.default is parameter.empty else f"={parameter.default!r}"
    allowed = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
    return parameter.name + default + (f" ({'|'.join(map(str, allowed))})" if allowed else "")


def component_options(table: Registry, name: str) -> str:
    factory = table[name]
    hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    return ", ".join(option_text(p, hints.get(k)) for k, p in table.options(name).items())


def sampling_options(name: str) -> str:
    """The sampling options a model understands, from the class its factory returns."""
    factory = MODELS[name]
    built = factory if inspect.isclass(factory) else typing.get_type_hints(factory).get("return")
    return ", ".join(getattr(built, "SAMPLING_OPTIONS", ())) or "none"


def catalogue() -> dict[str, list[tuple[str, str]]]:
    """Heading → (name, description) for presets, experiments, each component registry and sampling options."""
    import genbits.components  # noqa: F401  (fills the registries)
    from genbits.experiments import EXPERIMENTS

    out = {
        "presets (genbits train NAME)": [(p, preset_description(p)) for p in presets()],
        "experiments (genbits experiment NAME)": [(n, summary_line(m.__doc__)) for n, m in EXPERIMENTS.items()],
    }
    for where, table in COMPONENT_TABLES.items():
        out[f"{KINDS[where]} ({where}.name)"] = [(n, component_options(table, n)) for n in table.names()]
    out["sampling options (genbits sample / eval --OPTION)"] = [(n, sampling_options(n)) for n in MODELS.names()]
    return out


def with_defaults(config: Config) -> Config:
    """``config`` with every component's unset options at their defaults: what the run will actually use, in a
    form that trains the same model when saved as YAML."""
    for _, table, component in components(config):
        defaults = {k: p.default for k, p in table.options(component.name).items() if p.default is not p.empty}
        component.options = {**defaults, **component.options}
    return load_config(config.to_dict())


def latest_step(run: RunDir) -> int | None:
    files = checkpoint.list_checkpoints(run.checkpoints)
    return checkpoint.checkpoint_step(files[-1]) if files else None


def last_loss(records: list[dict[str, Any]]) -> str:
    """The last logged loss (``loss``, or ``loss/<player>`` for games)."""
    logged = [r for r in records if "event" not in r]
    if not logged:
        return "-"
    losses = {k: v for k, v in logged[-1].items() if k == "loss" or k.startswith("loss/")}
    return ", ".join(f"{k.removeprefix('loss/')} {v:.4g}" for k, v in losses.items()) or "-"


def run_row(run: RunDir, folder: Path) -> dict[str, str]:
    config = load_config(run.config_file)
    step = latest_step(run)
    status_file = run.path / "status.json"
    if status_file.exists():
        status = json.loads(status_file.read_text())["outcome"]
    else:
        status = "finished" if step == config.train.steps else "unfinished"
    results = json.loads((run.path / "eval.json").read_text()) if (run.path / "eval.json").exists() else {}
    return {
        "run": str(run.path.relative_to(folder)) or ".",
        "data / model / objective": f"{config.data.name} / {config.model.name} / {config.objective.name}",
        "step": f"{step if step is not None else '-'}/{config.train.steps}",
        "status": status,
        "loss": last_loss(run.metrics()),
        "test NLL": f"{results['test_nll']:.4f}" if "test_nll" in results else "-",
        "FID": f"{results['fid']:.3f}" if "fid" in results else "-",
    }


def run_rows(folder: Path) -> list[dict[str, str]]:
    """One row per run directory at or below ``folder``, in path order."""
    return [run_row(RunDir(c.parent), folder) for c in sorted(folder.rglob("config.yaml"))]
