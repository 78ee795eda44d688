"""Issue 13's transformer studies: their decision rules on hand-made runs, and each experiment end to end at smoke
size (a small text, a 16-wide model, a few steps, one seed, two learning rates)."""

import json
import math

import pytest
import torch
from test_experiments import readme_verdict

from genbits.cli import main
from genbits.experiments import lm_adam_vs_sgd, lm_entropy_collapse
from genbits.experiments.lm_entropy_collapse import (
    COLLAPSE,
    MARGIN,
    SPIKE,
    Size,
    collapse_step,
    decide,
    judged,
    spike_steps,
    uniform_entropy,
)

VERDICTS = {"holds", "fails", "undecided at this budget"}


def test_uniform_causal_attention_entropy_is_the_mean_log_of_the_visible_positions():
    for block in (1, 2, 7, 32):
        assert uniform_entropy(block) == pytest.approx(sum(math.log(i) for i in range(1, block + 1)) / block)


def fake_run(variant, lr, seed=0, bpc=2.0, entropy=(2.0, 2.0, 2.0), train=(4.0, 3.0, 2.5), diverged=False):
    return {
        "run": f"lr={lr}/seed{seed}",
        "variant": variant,
        "values": {"optim.lr": float(lr)},
        "seed": seed,
        "diverged": diverged,
        "val_bits_per_char": None if diverged else bpc,
        "steps": [10, 20, 30][: len(train)],
        "train_bits_per_char": list(train),
        "entropy": {"layer0": [2.0] * len(train), "layer1": list(entropy)[: len(train)]},
        "uniform_entropy": 2.5,
    }


def test_collapse_and_spikes_are_read_from_the_logged_curves():
    low = COLLAPSE * 2.5 - 0.01
    assert collapse_step(fake_run("baseline", "0.01", entropy=(2.0, low, 2.0))) == 20
    assert collapse_step(fake_run("baseline", "0.01", entropy=(2.0, COLLAPSE * 2.5, 2.0))) is None
    assert spike_steps(fake_run("baseline", "0.01", train=(4.0, 3.0, 3.0 + SPIKE + 0.01))) == [30]
    assert spike_steps(fake_run("baseline", "0.01", train=(4.0, 3.0, 3.0 + SPIKE))) == []
    assert spike_steps(fake_run("baseline", "0.01", train=(4.0, math.nan, 3.0))) == [20]


def grid_runs(sigma_collapses: bool = False, baseline_collapses: bool = True, baseline_fails: bool = True):
    """Baseline best at 0.001; at 0.01 and above it spikes at step 30 (after collapsing at 20) and fails."""
    runs = []
    collapsed, spiking = (2.0, 0.1, 0.1), (4.0, 3.0, 6.0)
    for lr in lm_entropy_collapse.LEARNING_RATES:
        high = float(lr) >= 0.01 and baseline_fails
        for seed in range(3):
            entropy = collapsed if high and baseline_collapses else (2.0, 2.0, 2.0)
            runs.append(
                fake_run("baseline", lr, seed, 2.0 + high * (MARGIN + 1), entropy, spiking if high else (4, 3, 2.5))
            )
            runs.append(fake_run("sigma-reparam", lr, seed, 2.1, collapsed if sigma_collapses else (2.0, 2.0, 2.0)))
            runs.append(fake_run("qk-norm", lr, seed, 2.1, diverged=high))
    return judged(runs)[0]


def test_entropy_rule_holds_fails_or_is_undecided_as_stated():
    decision = decide(grid_runs())
    assert decision["verdict"] == "holds"
    assert decision["unstable_lrs"] == ["0.01", "0.03", "0.1"]
    assert decision["baseline_failures"] == decision["collapse_preceded"] == 9
    assert decision["alive_where_baseline_fails"] == {"sigma-reparam": ["0.01", "0.03", "0.1"], "qk-norm": []}
    assert decide(grid_runs(sigma_collapses=True))["verdict"] == "fails"
    assert decide(grid_runs(baseline_collapses=False))["verdict"] == "fails"
    assert decide(grid_runs(baseline_fails=False))["verdict"] == "undecided at this budget"


def test_adam_vs_sgd_rule_needs_a_bracketed_best_and_a_large_separated_gap():
    def best(lr, values, edge=False):
        return {"lr": lr, "on_edge": edge, "median_val_bits_per_char": sorted(values)[1], "val_bits_per_char": values}

    assert lm_adam_vs_sgd.decide({"adam": best("0.003", [2.0, 2.1, 2.2]), "sgd": best("0.3", [2.8, 2.9, 3])}) == "holds"
    assert lm_adam_vs_sgd.decide({"adam": best("0.003", [2.0, 2.1, 2.9]), "sgd": best("0.3", [2.8, 2.9, 3])}) == (
        "undecided at this budget"
    )
    assert lm_adam_vs_sgd.decide({"adam": best("0.003", [2.0, 2.1, 2.2]), "sgd": best("0.3", [2.1, 2.15, 3])}) == (
        "fails"
    )
    edge = {"adam": best("0.03", [2.0, 2.1, 2.2], edge=True), "sgd": best("0.3", [2.8, 2.9, 3])}
    assert lm_adam_vs_sgd.decide(edge) == "undecided at this budget"


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Both studies shrunk to a small text, a 16-wide model, 4 steps and one sweep worker (each spawned worker
    imports torch: seconds); torch's thread count restored afterwards."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 60, encoding="utf-8")
    size = Size(
        (f"data.path={corpus}", "model.width=16", "model.depth=1", "data.block_size=16", "train.batch_size=4")
        + ("train.threads=1", "train.eval_samples=8", "train.sample_every=null", "train.log_every=2"),
        steps=4,
    )
    for module in (lm_entropy_collapse, lm_adam_vs_sgd):
        monkeypatch.setattr(module, "CPU", size)
    monkeypatch.setattr(lm_entropy_collapse, "WORKERS", 1)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def experiment(name: str, run_dir, figure: str) -> dict:
    assert main(["experiment", name, "--run-dir", str(run_dir), "--seeds", "1", "--no-progress"]) == 0
    for written in ("table.md", "results.json", "report.html", figure):
        assert (run_dir / written).is_file(), written
    results = json.loads((run_dir / "results.json").read_text())
    assert results["verdict"] in VERDICTS
    assert f"Verdict: **{results['verdict']}**" in (run_dir / "table.md").read_text()
    return results


def test_entropy_collapse_smoke_reads_entropy_per_layer(tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(lm_entropy_collapse, "LEARNING_RATES", ("0.001", "0.1"))
    results = experiment("lm-entropy-collapse", tmp_path / "ec", "entropy.png")
    assert sorted((r["variant"], r["lr"]) for r in results["runs"]) == sorted(
        (v, lr) for v in lm_entropy_collapse.VARIANTS for lr in ("0.001", "0.1")
    )
    for r in results["runs"]:
        assert r["steps"] == [2, 4] and list(r["entropy"]) == ["layer0"]
        assert all(0 < e <= math.log(16) for e in r["entropy"]["layer0"])
        assert r["diverged"] or 0 < r["val_bits_per_char"] < 10


def test_adam_vs_sgd_smoke_picks_each_best_lr(tiny, monkeypatch, tmp_path):
    shorter = {name: (extra, lrs[:2]) for name, (extra, lrs) in lm_adam_vs_sgd.OPTIMIZERS.items()}
    monkeypatch.setattr(lm_adam_vs_sgd, "OPTIMIZERS", shorter)
    results = experiment("lm-adam-vs-sgd", tmp_path / "as", "curves.png")
    for name, best in results["best"].items():
        group = [r["val_bits_per_char"] for r in results["runs"] if r["variant"] == name]
        assert best["median_val_bits_per_char"] == min(group) and best["on_edge"]  # two points: both are edges
    assert results["verdict"] == "undecided at this budget"


@pytest.mark.slow
def test_entropy_collapse_reruns_to_the_readme_verdict(tmp_path):
    """The study at the CPU size the README quotes (3 seeds): its verdict is the README's."""
    assert main(["experiment", "lm-entropy-collapse", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    verdict = json.loads((tmp_path / "results.json").read_text())["verdict"]
    assert verdict == readme_verdict("Attention entropy collapse")


@pytest.mark.slow
def test_adam_vs_sgd_reruns_to_the_readme_verdict(tmp_path):
    assert main(["experiment", "lm-adam-vs-sgd", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["verdict"] == readme_verdict("Adam vs SGD")
