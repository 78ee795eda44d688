"""Case studies reproduce the talk's claims, asserted from fitted models, not by eye."""

import json
import re
from pathlib import Path

from genbits.cli import main
from genbits.experiments.mode_seeking import coarse_kl

README = Path(__file__).parents[1] / "README.md"
# KL(q‖p*) and the masses m come from 20,000 samples each: their errors move KL − Σ m log(m/w) by < 0.01
MC_ERROR = 0.02
# KL(q‖p*) − Σ m log(m/w) of fits with ≥ 0.99 of their mass on one mode: 0.006–0.071 over 13 such fits at 600 steps
# with 1–4 torch threads (seeds 0–5); partly drained fits reach 0.18 (their leftover mass is badly shaped)
COLLAPSED_GAP = 0.15


def readme_verdict(section: str) -> str:
    """The verdict the README states under the ``### <section>`` (or ``####``) heading ("Verdict: **...**")."""
    text = README.read_text()
    title = re.search(rf"^###?#? {re.escape(section)}(?: \(|$)", text, re.M)  # the whole title, not a prefix
    body = re.split(r"\n##+ ", text[title.end() :], maxsplit=1)[0]
    return re.search(r"Verdict: \*\*(.+?)\*\*", body).group(1)


def test_mode_seeking_forward_covers_reverse_seeks(tmp_path):
    """Same flow, same target (weights 0.7/0.3, modes 8 apart), 5 seeds: the verdict of the rule fixed in the
    experiment is the one the README states, and every fit's numbers respect what holds for any q: the Monte-Carlo
    KL(q‖p*) is at least its coarse-grained (two-mode) value Σ m log(m/w), up to Monte-Carlo error, and close to it
    once q has collapsed onto one mode. No single trajectory is pinned: which mode reverse KL keeps, and when,
    depends on float rounding (thread count)."""
    assert main(["experiment", "mode-seeking", "--run-dir", str(tmp_path), "--seeds", "5", "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == readme_verdict("Mode seeking") == "holds", results["reverse_median_lighter_mass"]
    weights = results["target_weights"]
    for label in ("forward KL (max. likelihood)", "reverse KL"):
        for mass, kl in zip(results[label]["mass_per_mode"], results[label]["kl"], strict=True):
            assert kl["reverse_kl"] > coarse_kl(mass, weights) - MC_ERROR, (label, mass, kl)
            if max(mass) >= 0.99:  # collapsed: the bound is nearly tight, the rest is the one mode's shape misfit
                assert kl["reverse_kl"] - coarse_kl(mass, weights) < COLLAPSED_GAP, (label, mass, kl)
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert "Verdict: **holds**" in (tmp_path / "table.md").read_text()
