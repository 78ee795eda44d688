"""The diffusion experiments: a tiny run writes everything with a verdict from its rule; the README states the
verdict of the default run (slow test)."""

from __future__ import annotations

import json

import pytest
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.experiments import EXPERIMENTS
from genbits.experiments.diffusion_samplers import decide

VERDICTS = ("holds", "fails", "undecided at this budget")


def entry(sampler: str, nfe: int, fid: float) -> dict:
    return {"sampler": sampler, "nfe": nfe, "fid": fid}


def test_the_sampler_rule_reads_the_best_few_step_fid_against_the_reference():
    base = {"ddpm@1000": entry("ddpm", 1000, 0.1), "ddim@100": entry("ddim", 100, 0.01)}  # > 25 NFE: not counted
    assert decide(base | {"heun@25": entry("heun", 25, 0.11)})["verdict"] == "holds"
    assert decide(base | {"heun@25": entry("heun", 25, 0.13)})["verdict"] == "undecided at this budget"
    verdict = decide(base | {"heun@25": entry("heun", 25, 0.2), "ddim@5": entry("ddim", 5, 0.9)})
    assert verdict["verdict"] == "fails" and verdict["best_few_step"] == "heun@25"


def test_diffusion_samplers_smoke_writes_results_and_figure(tmp_path):
    results = EXPERIMENTS["diffusion-samplers"].run(tmp_path, steps=20, progress=False, n=200)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["verdict"] == results["verdict"] in VERDICTS
    assert set(saved["trained"]) == set(saved["exact"]) and "ddpm@1000" in saved["trained"]
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert f"Verdict: **{results['verdict']}**" in (tmp_path / "table.md").read_text()
    # the exact denoiser at 1000 ancestral steps samples the ring itself: as close as two draws of the data
    assert saved["exact"]["ddpm@1000"]["high_quality"] > 0.95


@pytest.mark.slow
def test_diffusion_samplers_default_run_gives_the_readme_verdict(tmp_path):
    assert main(["experiment", "diffusion-samplers", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == readme_verdict("Diffusion samplers")
