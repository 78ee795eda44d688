"""The nvae-bits ablation: its decision rule on hand-made runs, a one-step smoke run, and (slow) the whole default
experiment, whose verdict must be the one README states."""

from __future__ import annotations

import json

import pytest
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.experiments import nvae_bits
from genbits.experiments.nvae_bits import FULL, NONE, decide, flag_blowups


def runs(variant: str, lr: str, bpd: list[float | None], kl: float = 10.0) -> list[dict]:
    return [
        {"variant": variant, "lr": lr, "outcome": "converged", "bits_per_dim": b, "kl_per_group": [kl / 2, kl / 2]}
        for b in bpd
    ]


@pytest.mark.parametrize(
    ("full", "none", "verdict"),
    [
        ([3.0, 3.0, 3.1], [3.2, 3.3, 3.2], "holds"),  # a better bound, no more divergences
        ([3.0, 3.0, 3.1], [3.0, None, 3.1], "holds"),  # as good, but the bit-less model diverged once
        ([3.0, 3.0, 3.1], [3.02, 3.0, 3.06], "fails"),  # within the margin, no divergence either way
        ([3.0, None, 3.1], [3.2, 3.3, 3.2], "undecided at this budget"),  # better bound, but diverges more
    ],
)
def test_rule_compares_the_full_model_with_the_bitless_one(full, none, verdict):
    rows = flag_blowups(
        [*runs(FULL, "a", full), *runs(NONE, "a", none), *runs(FULL, "b", [3.0]), *runs(NONE, "b", [3.0])]
    )
    assert decide(rows, ("a", "b"))["verdict"] == verdict


def test_a_kl_blowup_counts_as_divergence():
    rows = flag_blowups(
        [*runs(FULL, "a", [3.0, 3.0, 3.0]), *runs(NONE, "a", [3.0, 3.0], kl=10.0), *runs(NONE, "a", [3.0], kl=101.0)]
    )
    assert [r["diverged"] for r in rows] == [False, False, False, False, False, True]


def test_smoke_one_step_writes_table_figure_and_results(tmp_path, monkeypatch):
    """Two variants, one lr, one seed, one step: the whole path (sweeps, scoring, rule, table, figure)."""
    monkeypatch.setattr(nvae_bits, "VARIANTS", {FULL: [], NONE: nvae_bits.VARIANTS[NONE]})
    monkeypatch.setattr(nvae_bits, "LEARNING_RATES", {False: ("1e-2",)})
    args = ["experiment", "nvae-bits", "--run-dir", str(tmp_path), "--seeds", "1", "--steps", "1", "--no-progress"]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] in ("holds", "fails", "undecided at this budget")
    assert {r["variant"] for r in results["runs"]} == {FULL, NONE}
    assert all(len(r["kl_per_group"]) == 2 and r["bits_per_dim"] > 0 for r in results["runs"])
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert f"Verdict: **{results['verdict']}**" in (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_nvae_bits_verdict_is_the_one_readme_states(tmp_path):
    assert main(["experiment", "nvae-bits", "--run-dir", str(tmp_path), "--workers", "2", "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == readme_verdict("NVAE bits")
