"""``report.html``: one self-contained page per run (plots inlined as PNG), readable offline and shareable."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from typing import Any

from genbits.runs.plots import plot_dynamics, plot_metrics
from genbits.runs.units import label, scaled
from genbits.train.rundir import RunDir

# Wide content scrolls inside its own box (a long config line, a table of many columns) so that the page itself
# never scrolls sideways in a narrow window; tables take that box through display:block, as GitHub's Markdown does.
STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:auto;padding:1em}img{max-width:100%}"
    "table{border-collapse:collapse;display:block;width:max-content;max-width:100%;overflow-x:auto}"
    "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}pre{overflow-x:auto}"
)


def inline_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def table(values: dict[str, Any]) -> str:
    """Name → value rows; names carry their unit (``genbits.runs.units``), floats show 4 decimals."""

    def cell(name: str, value: Any) -> str:
        return f"{scaled(name, value):.4f}" if isinstance(value, float) else str(value)

    rows = "".join(
        f"<tr><th>{html.escape(label(k))}</th><td>{html.escape(cell(k, v))}</td></tr>" for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def evaluation(results: dict) -> str:
    """eval.json as tables: the default sampling's metrics first, then one table per other way of sampling
    (``sampling[<key>]``: its options under ``how``, then its metrics)."""
    others = results.get("sampling", {})
    parts = ["<h2>Evaluation</h2>" + table({k: v for k, v in results.items() if k != "sampling"})]
    for key, result in others.items():
        options = {f"how: {k}": v for k, v in result.get("how", {}).items()}
        metrics = {k: v for k, v in result.items() if k != "how"}
        parts.append(f"<h3>sampled with {html.escape(key)}</h3>" + table(options | metrics))
    return "".join(parts)


def write_report(run_dir: str | Path) -> Path:
    """Render loss curves, metrics, sample plots (first and last) and the resolved config into report.html."""
    run = RunDir(run_dir)
    run.require()
    records = run.metrics()
    sections = [f"<h1>genbits run: {html.escape(run.path.name)}</h1>"]
    if (run.path / "eval.json").exists():
        sections.append(evaluation(json.loads((run.path / "eval.json").read_text())))
    last = [r for r in records if "event" not in r][-1:] or [{}]
    sections.append("<h2>Last logged step</h2>" + table(last[0]))
    with tempfile.TemporaryDirectory() as tmp:
        curves = Path(tmp) / "metrics.png"
        if plot_metrics(records, curves):
            sections.append("<h2>Training curves</h2>" + inline_png(curves))
        dynamics = Path(tmp) / "dynamics.png"
        if plot_dynamics(records, dynamics):
            sections.append("<h2>Training dynamics</h2>" + inline_png(dynamics))
    samples = sorted(run.samples.glob("*.png")) if run.samples.is_dir() else []
    if samples:
        picks = samples if len(samples) <= 2 else [samples[0], samples[-1]]
        sections.append("<h2>Samples</h2>" + "".join(f"<h3>{html.escape(p.stem)}</h3>{inline_png(p)}" for p in picks))
    sections.append(f"<h2>Config</h2><pre>{html.escape(run.config_file.read_text())}</pre>")
    provenance = run.path / "provenance.json"
    if provenance.exists():
        sections.append(f"<h2>Provenance</h2><pre>{html.escape(provenance.read_text())}</pre>")
    out = run.path / "report.html"
    out.write_text(page(run.path.name, sections))
    return out


def page(title: str, sections: list[str]) -> str:
    """One self-contained HTML page; run and sweep reports share its look."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def write_experiment_report(run_dir: str | Path, title: str) -> Path:
    """report.html of an experiment directory: its tables (``*.md``, shown as text) and figures (``*.png``)."""
    path = Path(run_dir)
    sections = [f"<h1>genbits experiment: {html.escape(title)}</h1>"]
    sections += [
        f"<h2>{html.escape(t.name)}</h2><pre>{html.escape(t.read_text())}</pre>" for t in sorted(path.glob("*.md"))
    ]
    sections += [f"<h2>{html.escape(f.stem)}</h2>{inline_png(f)}" for f in sorted(path.glob("*.png"))]
    out = path / "report.html"
    out.write_text(page(title, sections))
    return out
