"""The reports' HTML structure: units beside the numbers. Run directories are written by hand, so each test renders
in a second without training."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt

from genbits.runs.report import write_report


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
