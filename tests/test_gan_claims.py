"""The GAN studies' claims as the README states them: its tables are the experiments' own table.md (rendered from the
results.json of the run the README quotes, kept in docs/results/), and the ``slow`` tests rerun each study at the
size the README quotes and assert the verdict it states, so README and code cannot drift apart."""

import json
from pathlib import Path

import pytest
from test_experiments import README, readme_verdict

from genbits.cli import main
from genbits.experiments import EXPERIMENTS, gan_mog

RESULTS = Path(__file__).parents[1] / "docs" / "results"


def stored(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def table_body(table: str) -> str:
    """table.md without its title line, where it has one (the README section has its own heading)."""
    return table.split("\n", 2)[2] if table.startswith("#") else table


@pytest.mark.parametrize("name", sorted(path.stem for path in RESULTS.glob("*.json")))
def test_readme_tables_are_the_experiments_own(name):
    """Every stored run's table.md, as the experiment writes it, is in the README verbatim (``NAME@SETTING.json``:
    a second stored run of experiment NAME, at another size)."""
    experiment = EXPERIMENTS[name.split("@")[0]]
    assert table_body(experiment.table(stored(name))) in README.read_text(), f"README's {name} table is stale"


def test_readme_mog_verdicts_are_the_stored_runs():
    claims = {c["claim"]: c["verdict"] for c in stored("gan-mog")["claims"]}
    assert {claim: readme_verdict(claim) for claim in claims} == claims


@pytest.mark.parametrize(
    ("name", "section"),
    [
        ("gan-adam-beta1", "Adam β1"),
        ("gan-spectral-norm", "Spectral normalization"),
        ("gan-batch-size", "Batch size"),
        ("gan-late-degradation", "Late degradation"),
    ],
)
def test_readme_image_verdicts_are_the_stored_runs(name, section):
    assert readme_verdict(section) == stored(name)["verdict"]


# ----------------------------------------------------------------------------------------- reruns (slow)


def rerun(name: str, run_dir: Path, *args: str) -> dict:
    assert main(["experiment", name, "--run-dir", str(run_dir), "--no-progress", *args]) == 0
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
def test_gan_mog_claims_rerun_to_the_readme_verdicts(tmp_path, monkeypatch):
    """The ring at the size the README quotes (5 seeds, 1,500 steps, every arm): each claim's verdict."""
    monkeypatch.setattr(gan_mog, "DATASETS", {"ring": "gan-ring"})
    results = rerun("gan-mog", tmp_path, "--seeds", "5", "--steps", "1500")
    assert {c["claim"]: c["verdict"] for c in results["claims"]} == {
        c.claim: readme_verdict(c.claim) for c in gan_mog.COMPARISONS
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "section"),
    [
        ("gan-adam-beta1", "Adam β1"),
        ("gan-conditioning", "Conditioning throughout"),
        ("gan-batch-size", "Batch size"),
        ("gan-spectral-norm", "Spectral normalization"),
        ("gan-late-degradation", "Late degradation"),
    ],
)
def test_image_gan_study_reruns_to_the_readme_verdict(tmp_path, name, section):
    """The CPU default (3 seeds; the README quotes it): the verdict the README states."""
    assert rerun(name, tmp_path)["verdict"] == readme_verdict(section)
