"""The sweep report: ``report.html`` (outcomes and final metrics per grid point and per run) and ``stability.png``.

stability.png, left: the final metric against the first numeric grid key (log scale when all its values are
positive; with no numeric key, the first key's values as categories), one line per variant (the values of the other
grid keys): the median over seeds, a min–max band, every seed as a dot. The final metric is test_nll where every
finished, non-diverged run has it, else the final smoothed training loss. Right: the fraction of finished seeds
that converged. A diverged run has no final metric: it shows only on the right.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from genbits.runs.report import inline_png, page  # noqa: E402
from genbits.runs.units import label as with_unit  # noqa: E402
from genbits.sweeps.sweep import collect, outcome_counts, read_spec, short_labels  # noqa: E402

Row = dict[str, Any]


def write_sweep_report(sweep_dir: str | Path) -> Path:
    """Write stability.png and a self-contained report.html into the sweep directory."""
    sweep_dir = Path(sweep_dir)
    spec = read_spec(sweep_dir)
    rows = collect(sweep_dir)
    keys = list(spec["grid"])
    metric = report_metric(rows)
    plot_stability(rows, keys, metric, sweep_dir / "stability.png")
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcome_counts(rows).items()))
    sweep = {k: spec[k] for k in ("source", "overrides", "grid", "seeds", "rules", "executor")}
    sections = [
        f"<h1>genbits sweep: {html.escape(sweep_dir.name)}</h1><p>{len(rows)} runs: {counts}</p>",
        "<h2>Stability</h2>" + inline_png(sweep_dir / "stability.png"),
        f"<h2>Grid points: final {with_unit(metric)}</h2>" + point_table(rows, keys, metric),
        "<h2>Runs</h2>" + run_table(rows, metric),
        f"<h2>Sweep</h2><pre>{html.escape(json.dumps(sweep, indent=2))}</pre>",
        f"<h2>Base config</h2><pre>{html.escape(yaml.safe_dump(spec['config'], sort_keys=False))}</pre>",
    ]
    out = sweep_dir / "report.html"
    out.write_text(page(f"sweep {sweep_dir.name}", sections))
    return out


# ---- what is plotted -------------------------------------------------------------------------------------------


def report_metric(rows: list[Row]) -> str:
    """test_nll if every finished, non-diverged run has it (one metric for all points), else the final loss."""
    metrics = {r["status"]["metric"] for r in rows if r["status"] and r["status"]["outcome"] != "diverged"}
    return "test_nll" if metrics == {"test_nll"} else "loss"


def final_value(row: Row, metric: str) -> float | None:
    status = row["status"]
    return status["final"].get(metric) if status else None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def x_key(rows: list[Row], keys: list[str]) -> str | None:
    """The first grid key whose values are all numbers, else the first key (as categories); None without a grid."""
    numeric = [k for k in keys if all(is_number(r["values"][k]) for r in rows)]
    return (numeric or keys or [None])[0]


def variant(row: Row, keys: list[str], x: str | None) -> str:
    labels = short_labels(keys)
    return ", ".join(f"{labels[k]}={row['values'][k]}" for k in keys if k != x)


def cells(rows: list[Row], keys: list[str], x: str | None) -> dict[str, dict[Any, list[Row]]]:
    """variant → x value → the seeds' rows, in grid order."""
    out: dict[str, dict[Any, list[Row]]] = {}
    for row in rows:
        value = row["values"][x] if x else None
        out.setdefault(variant(row, keys, x), {}).setdefault(json.dumps(value), []).append(row)
    return out


def converged_fraction(rows: list[Row]) -> float:
    finished = [r for r in rows if r["status"]]
    return sum(r["status"]["outcome"] == "converged" for r in finished) / len(finished) if finished else math.nan


def diverged_any(rows: list[Row]) -> bool:
    return any(r["status"] and r["status"]["outcome"] == "diverged" for r in rows)


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max); NaN where no seed has a value, so the line shows a gap."""
    return (statistics.median(values), min(values), max(values)) if values else (math.nan,) * 3


# ---- the plot --------------------------------------------------------------------------------------------------


def plot_stability(rows: list[Row], keys: list[str], metric: str, path: Path) -> None:
    x = x_key(rows, keys)
    xs = list(dict.fromkeys(json.dumps(r["values"][x] if x else None) for r in rows))  # grid order, as JSON
    numeric = x is not None and all(is_number(json.loads(v)) for v in xs)
    position: Callable[[str], float] = (lambda v: json.loads(v)) if numeric else xs.index
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    top = blended_transform_factory(left.transData, left.transAxes)  # x in data, y in axes units
    for i, (label, by_x) in enumerate(cells(rows, keys, x).items()):
        color = f"C{i % 10}"
        at = [position(v) for v in by_x]
        finals = [[v for r in group if (v := final_value(r, metric)) is not None] for group in by_x.values()]
        for where, values in zip(at, finals, strict=True):
            left.scatter([where] * len(values), values, s=14, color=color, alpha=0.6)
        median, low, high = zip(*(spread(values) for values in finals), strict=True)
        left.plot(at, median, "-o", color=color, label=label or None)
        left.fill_between(at, low, high, color=color, alpha=0.15)
        diverged = [where for where, group in zip(at, by_x.values(), strict=True) if diverged_any(group)]
        left.scatter(diverged, [0.97] * len(diverged), marker="x", color=color, transform=top)
        right.plot(at, [converged_fraction(group) for group in by_x.values()], "-o", color=color, label=label or None)
    for ax in (left, right):
        ax.set_xlabel(x or "grid point")
        if numeric and all(json.loads(v) > 0 for v in xs):
            ax.set_xscale("log")
            ax.minorticks_off()  # ticks at the grid's own values only: log minor labels overlap on short ranges
            ax.set_xticks([json.loads(v) for v in xs], [f"{json.loads(v):g}" for v in xs])
        elif not numeric:
            ax.set_xticks(range(len(xs)), [str(json.loads(v)) if x else "base" for v in xs])
    left.set_ylabel(f"final {with_unit(metric)}")
    left.set_title("median over seeds, min–max band, seeds as dots; × on top: a seed diverged", fontsize=9)
    right.set_ylabel("fraction of seeds converged")
    right.set_ylim(-0.05, 1.05)
    right.set_title("diverged and stalled runs count as not converged", fontsize=9)
    if len(cells(rows, keys, x)) > 1:
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- the tables ------------------------------------------------------------------------------------------------


def html_table(header: list[str], body: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return html.escape(f"{value:.4g}" if isinstance(value, float) else "–" if value is None else str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def point_table(rows: list[Row], keys: list[str], metric: str) -> str:
    """One line per grid point: outcome counts over seeds and the final metric's median and range."""
    labels = short_labels(keys)
    header = [*(labels[k] for k in keys), "converged", "stalled", "diverged", "unfinished", "median", "min", "max"]
    points: dict[str, list[Row]] = {}
    for row in rows:
        points.setdefault(row["point"], []).append(row)
    body = []
    for seeds in points.values():
        counts = outcome_counts(seeds)
        values = [v for r in seeds if (v := final_value(r, metric)) is not None]
        body.append(
            [
                *(seeds[0]["values"][k] for k in keys),
                *(counts[o] for o in ("converged", "stalled", "diverged", "unfinished")),
                *(None if math.isnan(s) else s for s in spread(values)),
            ]
        )
    return html_table(header, body)


def run_table(rows: list[Row], metric: str) -> str:
    body = [
        [r["run"], s["outcome"], s["reason"], final_value(r, metric), s["step"], s["wall_time"]]
        if (s := r["status"])
        else [r["run"], "unfinished", None, None, None, None]
        for r in rows
    ]
    return html_table(["run", "outcome", "reason", f"final {with_unit(metric)}", "step", "wall time (s)"], body)
