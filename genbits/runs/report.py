"""``report.html``: one self-contained page per run (plots inlined as PNG), readable offline and shareable.

The pages hold no script and reference nothing outside themselves, so they open the same from a laptop, a mail
attachment or a CI artifact; tests/test_browser.py opens them in headless Chromium to keep them so.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from genbits.metrics.modes import MIN_COUNT
from genbits.runs.plots import DYNAMICS, DYNAMICS_TITLES, plot_dynamics, plot_metrics
from genbits.runs.units import label, scaled
from genbits.train.rundir import RunDir

# Wide content scrolls inside its own box (a long config line, a table of many columns) so that the page itself
# never scrolls sideways in a narrow window; tables take that box through display:block, as GitHub's Markdown does.
STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:auto;padding:1em}img{max-width:100%}"
    "table{border-collapse:collapse;display:block;width:max-content;max-width:100%;overflow-x:auto;margin:.5em 0}"
    "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}pre{overflow-x:auto}"
    "figcaption,.note{color:#555;font-size:90%}summary{cursor:pointer;font-size:1.3em;font-weight:bold;margin:.8em 0}"
)


def inline_png(path: Path, alt: str | None = None) -> str:
    """The PNG as a data: URI, so the page carries its figures; ``alt`` says what it shows (default: the file stem)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt or path.stem)}">'


def figure(path: Path, alt: str, caption: str) -> str:
    return f"<figure>{inline_png(path, alt)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def table(values: dict[str, Any]) -> str:
    """Name → value rows; names carry their unit (``genbits.runs.units``), floats show 4 decimals."""

    def cell(name: str, value: Any) -> str:
        return f"{scaled(name, value):.4f}" if isinstance(value, float) else str(value)

    rows = "".join(
        f"<tr><th>{html.escape(label(k))}</th><td>{html.escape(cell(k, v))}</td></tr>" for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def mode_coverage(modes: dict[str, Any], heading: str) -> str:
    """eval.json's ``modes`` as a reader wants it: modes captured out of K, % high quality, JSD, and the histogram
    of samples per mode whose last bin, the samples far from every centre, is labelled off-mode."""
    counts = modes["counts"]
    k = len(counts) - 1
    summary = {
        "modes captured": f"{modes['modes_captured']} of {k}",
        "high quality": f"{100 * modes['high_quality']:.1f}%",
        "jsd": modes["jsd"],
    }
    head = "".join(f"<th>{i}</th>" for i in range(k)) + "<th>off-mode</th>"
    body = "".join(f"<td>{c}</td>" for c in counts)
    histogram = f"<table><tr><th>mode</th>{head}</tr><tr><th>samples</th>{body}</tr></table>"
    note = (
        "High quality: within 3 std of the nearest centre. A mode is captured with at least "
        f"{MIN_COUNT} high-quality samples. JSD: from the histogram to uniform over the modes (off-mode bin empty)."
    )
    return f"{heading}{table(summary)}{histogram}<p class='note'>{html.escape(note)}</p>"


def elbo_terms(terms: dict[str, float], level: int) -> str:
    """The bound's terms in brief (eval.json keeps every one): the largest five and what the rest sum to."""
    ranked = sorted(terms.items(), key=lambda kv: -abs(kv[1]))
    shown = dict(ranked[:5]) | (
        {f"the other {len(ranked) - 5}": sum(v for _, v in ranked[5:])} if len(ranked) > 5 else {}
    )
    return f"<h{level}>Terms of −ELBO (nats, largest first)</h{level}>" + table(shown)


def metrics_block(values: dict[str, Any], level: int) -> str:
    """One evaluation (default or one way of sampling): a table of its numbers, then its mode coverage."""
    block = table({k: v for k, v in values.items() if k not in ("modes", "elbo_terms")})
    if "elbo_terms" in values:
        block += elbo_terms(values["elbo_terms"], level)
    if "modes" in values:
        block += mode_coverage(values["modes"], f"<h{level}>Mode coverage</h{level}>")
    return block


def evaluation(results: dict[str, Any]) -> str:
    """eval.json as tables: the default sampling's metrics first, then one table per other way of sampling
    (``sampling[<key>]``: its options under ``how``, then its metrics)."""
    others = results.get("sampling", {})
    parts = ["<h2>Evaluation</h2>" + metrics_block({k: v for k, v in results.items() if k != "sampling"}, 3)]
    for key, result in others.items():
        options = {f"how: {k}": v for k, v in result.get("how", {}).items()}
        metrics = {k: v for k, v in result.items() if k != "how"}
        parts.append(f"<h3>sampled with {html.escape(key)}</h3>" + metrics_block(options | metrics, 4))
    return "".join(parts)


def dynamics(records: list[dict[str, Any]], tmp: Path) -> str:
    """train.diagnostics' plots, collapsed: most readers want curves and samples, a debugging reader opens this."""
    path = tmp / "dynamics.png"
    if not plot_dynamics(records, path):
        return ""
    caption = "Logged with train.diagnostics=true, one panel per kind (log scale but for entropies): " + "; ".join(
        DYNAMICS_TITLES.values()
    )
    alt = "training dynamics: gradient norms, update ratios and spectral norms against step"
    summary = "Training dynamics: gradient norms, update ratios, spectral norms"
    return f"<details><summary>{summary}</summary>{figure(path, alt, caption)}</details>"


def write_report(run_dir: str | Path) -> Path:
    """Render metrics, curves, dynamics (collapsed), sample plots (first and last) and the config into report.html."""
    run = RunDir(run_dir)
    run.require()
    records = run.metrics()
    sections = [f"<h1>genbits run: {html.escape(run.path.name)}</h1>"]
    if (run.path / "eval.json").exists():
        sections.append(evaluation(json.loads((run.path / "eval.json").read_text())))
    last = [r for r in records if "event" not in r][-1:] or [{}]
    sections.append(
        "<h2>Last logged step</h2>" + table({k: v for k, v in last[0].items() if not k.startswith(DYNAMICS)})
    )
    with tempfile.TemporaryDirectory() as tmp:
        curves = Path(tmp) / "metrics.png"
        if plot_metrics(records, curves):
            alt = "training curves: each logged metric against step"
            sections.append(
                "<h2>Training curves</h2>"
                + figure(curves, alt, "Each logged metric against step; red lines: NaN rollbacks.")
            )
        sections.append(dynamics(records, Path(tmp)))
    samples = sorted(run.samples.glob("*.png")) if run.samples.is_dir() else []
    if samples:
        picks = samples if len(samples) <= 2 else [samples[0], samples[-1]]
        shown = (f"<h3>{html.escape(p.stem)}</h3>{inline_png(p, f'samples at {p.stem}')}" for p in picks)
        sections.append("<h2>Samples</h2>" + "".join(shown))
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


# ---- Markdown, as experiments write it ------------------------------------------------------------------------

DELIMITER = re.compile(r"\s*:?-+:?\s*")


def inline(text: str) -> str:
    """Escaped text with ``**bold**``: escaping comes first, so no input can add a tag."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def cells(line: str) -> list[str]:
    """``| a | b |`` → ["a", "b"]; ``\\|`` is a literal bar."""
    parts = re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))
    return [p.strip().replace("\\|", "|") for p in parts]


def pipe_table(lines: list[str]) -> str:
    """A pipe table (header, delimiter row, body) with its column alignment; without a delimiter row, a paragraph."""
    rows = [cells(line) for line in lines]
    if len(rows) < 2 or not all(DELIMITER.fullmatch(c) for c in rows[1]):
        return f"<p>{inline(' '.join(lines))}</p>"
    align = [
        "right" if c.endswith(":") and not c.startswith(":") else "center" if c.endswith(":") else "" for c in rows[1]
    ]

    def row(values: list[str], tag: str) -> str:
        styles = [f' style="text-align:{a}"' if a else "" for a in align] + [""] * len(values)
        styled = (f"<{tag}{style}>{inline(v)}</{tag}>" for v, style in zip(values, styles, strict=False))
        return f"<tr>{''.join(styled)}</tr>"

    return f"<table>{row(rows[0], 'th')}{''.join(row(r, 'td') for r in rows[2:])}</table>"


def markdown(text: str, top: int = 3) -> str:
    """The Markdown experiments write, as HTML: pipe tables, paragraphs, ``#`` headings (``#`` at level ``top``) and
    ``**bold**``; anything else shows as escaped text. Small on purpose: genbits writes these files itself, and a
    Markdown library would be a dependency for four constructs."""

    def kind(line: str) -> str:
        line = line.strip()
        if not line:
            return "blank"
        return "table" if line.startswith("|") else "heading" if re.match(r"#+\s", line) else "text"

    out = []
    for what, group in itertools.groupby(text.splitlines(), kind):
        lines = [line.strip() for line in group]
        if what == "table":
            out.append(pipe_table(lines))
        elif what == "text":
            out.append(f"<p>{inline(' '.join(lines))}</p>")
        elif what == "heading":
            for line in lines:
                hashes, title = line.split(maxsplit=1)
                level = min(top + len(hashes) - 1, 6)
                out.append(f"<h{level}>{inline(title)}</h{level}>")
    return "".join(out)


def write_experiment_report(run_dir: str | Path, title: str) -> Path:
    """report.html of an experiment directory: its tables (``*.md``, rendered as HTML) and figures (``*.png``)."""
    path = Path(run_dir)
    sections = [f"<h1>genbits experiment: {html.escape(title)}</h1>"]
    sections += [f"<h2>{html.escape(t.name)}</h2>{markdown(t.read_text())}" for t in sorted(path.glob("*.md"))]
    sections += [f"<h2>{html.escape(f.stem)}</h2>{inline_png(f)}" for f in sorted(path.glob("*.png"))]
    out = path / "report.html"
    out.write_text(page(title, sections))
    return out
