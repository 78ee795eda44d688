"""The reports' HTML structure: mode coverage as tables, units beside the numbers, experiment tables as HTML tables,
the dynamics collapsed. Run directories are written by hand, so each test renders in a second without training."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from genbits.runs.report import markdown, write_experiment_report, write_report

MODES = {"modes_captured": 6, "high_quality": 0.253, "jsd": 0.38437812737406285, "counts": [40, 33, 18, 38, 20, 36, 5]}


class Page(HTMLParser):
    """What the structure tests look at: tables as rows of cell texts, headings, and each image's enclosing tags."""

    VOID = {"img", "meta", "br", "hr", "input", "link"}

    def __init__(self, text: str):
        super().__init__()
        self.open: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self.images: list[tuple[dict, list[tuple[str, dict]]]] = []
        self.summaries: list[str] = []
        self.text = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append((attributes, list(self.open)))
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th", "h1", "h2", "h3", "h4", "summary"):
            self.text = ""
        if tag not in self.VOID:
            self.open.append((tag, attributes))

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1][0] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.text)
        elif tag in ("h1", "h2", "h3", "h4"):
            self.headings.append(self.text)
        elif tag == "summary":
            self.summaries.append(self.text)

    def handle_data(self, data: str) -> None:
        self.text += data

    def rows(self) -> list[list[str]]:
        return [row for table in self.tables for row in table]


def fake_run(path: Path, evaluation: dict, records: list[dict]) -> Path:
    """A run directory as write_report reads it: config.yaml, metrics.jsonl, eval.json, one sample plot."""
    (path / "samples").mkdir(parents=True)
    (path / "config.yaml").write_text("data: ring\n")
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "eval.json").write_text(json.dumps(evaluation))
    plt.imsave(path / "samples" / "step-0000010.png", [[0.0, 1.0], [1.0, 0.0]])
    return path


def render(path: Path) -> Page:
    page = Page(write_report(path).read_text())
    assert page.open == [], page.open  # every tag closed
    return page


def test_mode_coverage_is_a_table_with_the_off_mode_bin_labelled(tmp_path):
    evaluation = {"step": 10, "samples": 190, "modes": MODES}
    evaluation["sampling"] = {"temperature=0.5": {"how": {"temperature": 0.5}, "samples": 190, "modes": MODES}}
    page = render(fake_run(tmp_path, evaluation, [{"step": 10, "loss": 1.0}]))
    rows = page.rows()
    assert rows.count(["modes captured", "6 of 6"]) == 2  # six modes: the seventh bin is off-mode
    assert rows.count(["high quality", "25.3%"]) == 2  # default sampling and temperature=0.5
    assert rows.count(["jsd (nats)", "0.3844"]) == 2
    assert rows.count(["mode", "0", "1", "2", "3", "4", "5", "off-mode"]) == 2
    assert rows.count(["samples", "40", "33", "18", "38", "20", "36", "5"]) == 2
    assert page.headings.count("Mode coverage") == 2 and "sampled with temperature=0.5" in page.headings
    assert "modes_captured" not in write_report(tmp_path).read_text()  # no raw dict left


def test_numbers_carry_their_units(tmp_path):
    evaluation = {"step": 10, "test_nll": 1.5, "gap": 0.25, "bits_per_dim": 3.5, "fid": 12.0}
    evaluation |= {"kid_mean": 0.00123, "kid_std": 0.0005}
    records = [{"step": 10, "loss": 1.0, "nll": 1.0, "time": 2.5}]
    rows = render(fake_run(tmp_path, evaluation, records)).rows()
    for row in (
        ["test_nll (nats)", "1.5000"],
        ["gap (nats)", "0.2500"],
        ["bits_per_dim (bits/dim)", "3.5000"],
        ["kid_mean (×1000)", "1.2300"],  # shown ×1000, and the label says so
        ["kid_std (×1000)", "0.5000"],
        ["fid", "12.0000"],  # no unit to give
        ["nll (nats)", "1.0000"],
        ["time (s)", "2.5000"],
        ["step", "10"],
    ):
        assert row in rows, (row, rows)


def test_dynamics_are_collapsed_with_a_labelled_plot(tmp_path):
    records = [
        {
            "step": s,
            "loss": 1.0 / s,
            "grad_norm/model": 2.0 * s,
            "grad_norm/model/w": 1.0 * s,
            "update_ratio/model/w": 1e-3,
        }
        for s in (5, 10)
    ]
    page = render(fake_run(tmp_path, {"step": 10}, records))
    around = {image["alt"].split(":")[0]: enclosing for image, enclosing in page.images}
    assert set(around) == {"training curves", "training dynamics", "samples at step-0000010"}
    tags = dict(around["training dynamics"])
    assert "figure" in tags and "open" not in tags["details"]  # collapsed by default, with a caption
    assert "details" not in dict(around["training curves"])  # the curves stay in view
    assert any(s.startswith("Training dynamics") for s in page.summaries)
    assert not any(row[0].startswith(("grad_norm", "update_ratio")) for row in page.rows())  # not in the step table


def test_no_dynamics_section_without_diagnostics(tmp_path):
    page = render(fake_run(tmp_path, {"step": 10}, [{"step": 10, "loss": 1.0}]))
    assert page.summaries == [] and "Training curves" in page.headings


def test_markdown_tables_paragraphs_headings_and_escaping():
    text = "\n".join(
        [
            "# Title <b>",
            "",
            "A paragraph on",
            "two lines & **bold**.",
            "| rule | ρ | ok |",
            "|---|---:|:---:|",
            "| GD <script>alert(1)</script> | 1.001 | **yes** |",
            "| a \\| b | 2 | no |",
            "",
            "## Below",
            "| not a table |",
            "| no delimiter row |",
        ]
    )
    out = markdown(text)
    assert "<script>" not in out and "<b>" not in out
    assert out.startswith("<h3>Title &lt;b&gt;</h3><p>A paragraph on two lines &amp; <strong>bold</strong>.</p>")
    assert '<tr><th>rule</th><th style="text-align:right">ρ</th><th style="text-align:center">ok</th></tr>' in out
    assert "<td>GD &lt;script&gt;alert(1)&lt;/script&gt;</td>" in out
    assert '<td style="text-align:center"><strong>yes</strong></td>' in out
    assert "<td>a | b</td>" in out  # an escaped bar stays in its cell
    assert "<h4>Below</h4><p>| not a table | | no delimiter row |</p>" in out
    page = Page(out)
    assert page.tables == [
        [["rule", "ρ", "ok"], ["GD <script>alert(1)</script>", "1.001", "yes"], ["a | b", "2", "no"]]
    ]


@pytest.mark.parametrize("top", [2, 3])
def test_markdown_heading_levels(top):
    assert markdown("# a\n## b\n####### deep", top) == f"<h{top}>a</h{top}><h{top + 1}>b</h{top + 1}><h6>deep</h6>"


def test_experiment_tables_are_html_tables(tmp_path):
    (tmp_path / "table.md").write_text("# Result\n\n| rule | verdict |\n|---|---|\n| RK4 | bounded |\n")
    plt.imsave(tmp_path / "figure.png", [[0.0, 1.0], [1.0, 0.0]])
    text = write_experiment_report(tmp_path, "demo").read_text()
    page = Page(text)
    assert "<pre>" not in text and page.tables == [[["rule", "verdict"], ["RK4", "bounded"]]]
    assert page.headings == ["genbits experiment: demo", "table.md", "Result", "figure"]
    assert [alt["alt"] for alt, _ in page.images] == ["figure"]
