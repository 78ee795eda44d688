"""The everyday CLI: --version, list, config, runs, train --eval, observe-only changes on resume, file permissions,
one-line warnings and rank-0 output, each through ``main()``."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import yaml

from genbits import __version__, load_config, load_run
from genbits.cli import main
from genbits.train import checkpoint
from genbits.train.parts import build_parts

TINY = ["--set", "train.steps=20", "--set", "train.sample_every=null", "--set", "train.checkpoint_every=10"]


def train_tiny(run_dir, *extra: str) -> None:
    assert main(["train", "flow-ring", *TINY, *extra, "--run-dir", str(run_dir), "--no-progress"]) == 0


def test_version_names_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"genbits {__version__}")


def test_list_groups_by_kind_with_allowed_values(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    headings = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert [h.split(" (")[0] for h in headings] == [
        "presets",
        "experiments",
        "datasets",
        "models",
        "objectives",
        "update rules",
        "sampling options",
    ]
    assert "d_norm='none' (none|batch|layer|group|spectral|spectral-svd|sigma-reparam|sigma-reparam-one)" in out
    assert "  mode-seeking       Forward vs reverse KL" in out
    assert "  dirac-gan          The Dirac-GAN (Mescheder et al. 2018)" in out  # "et al." does not end a sentence
    sampling = out.split("sampling options")[1]
    assert "flow               temperature" in sampling and "dirac-gan          none" in sampling


def test_config_prints_a_resolved_config_that_trains_the_same_model(tmp_path, capsys):
    assert main(["config", "gan-ring", "--set", "model.d_norm=spectral"]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["model"]["depth"] == 2  # a default, filled in
    path = tmp_path / "my.yaml"
    path.write_text(printed)
    assert main(["config", str(path)]) == 0 and capsys.readouterr().out == printed  # resolving is idempotent
    torch.manual_seed(0)
    ours = build_parts(load_config(path)).model.state_dict()
    torch.manual_seed(0)
    preset = build_parts(load_config("gan-ring", ["model.d_norm=spectral"])).model.state_dict()
    assert ours.keys() == preset.keys() and all(torch.equal(ours[k], preset[k]) for k in ours)
    assert main(["config", "gan-ring", "--set", "model.d_norm=spectrall"]) == 2
    assert "model.d_norm" in capsys.readouterr().err


def test_runs_tabulates_every_run_below_a_folder(tmp_path, capsys):
    train_tiny(tmp_path / "a")
    assert main(["train", "gan-ring", *TINY, "--run-dir", str(tmp_path / "group" / "b"), "--no-progress"]) == 0
    assert main(["eval", str(tmp_path / "a"), "-n", "500", "--metrics", "nll", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["runs", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["run", "data"] and len(lines) == 3
    nll = json.loads((tmp_path / "a" / "eval.json").read_text())["test_nll"]
    assert lines[1].startswith("a ") and "ring / flow / likelihood" in lines[1] and "20/20" in lines[1]
    assert "finished" in lines[1] and f"{nll:.4f}" in lines[1]
    assert lines[2].startswith("group/b ") and "generator" in lines[2] and "discriminator" in lines[2]
    assert main(["runs", str(tmp_path / "a" / "config.yaml")]) == 2


def test_train_with_eval_ends_with_the_default_evaluation_and_report(tmp_path, capsys):
    train_tiny(tmp_path / "run", "--eval")
    assert "test_nll" in json.loads((tmp_path / "run" / "eval.json").read_text())
    assert (tmp_path / "run" / "report.html").is_file()
    assert "report:" in capsys.readouterr().out


def test_observe_only_settings_may_change_on_resume_and_change_no_number(tmp_path):
    """Logging interval, diagnostics and plots are not the run's identity: resuming with other values is allowed,
    recorded (config.yaml, an event in metrics.jsonl) and ends bit-identical to a run that never changed them."""
    train_tiny(tmp_path / "straight", "--set", "train.steps=40")
    train_tiny(tmp_path / "changed")
    changed = ["--set", "train.steps=40", "--set", "train.log_every=3", "--set", "train.diagnostics=true"]
    changed += ["--set", "train.tensorboard=true"]
    train_tiny(tmp_path / "changed", *changed)
    stored = load_config(tmp_path / "changed" / "config.yaml").train
    assert stored.log_every == 3 and stored.diagnostics
    records = [json.loads(line) for line in (tmp_path / "changed" / "metrics.jsonl").read_text().splitlines()]
    (event,) = [r for r in records if "event" in r]
    assert event == {
        "step": 20,
        "event": "observe-only settings changed",
        "train.diagnostics": True,
        "train.log_every": 3,
        "train.tensorboard": True,
    }
    assert list((tmp_path / "changed" / "tensorboard").iterdir())
    a, b = load_run(tmp_path / "straight", ema=False), load_run(tmp_path / "changed", ema=False)
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert main(["train", "flow-ring", *TINY, "--set", "train.seed=1", "--run-dir", str(tmp_path / "changed")]) == 2


def test_outputs_get_the_permissions_of_every_other_file(tmp_path, monkeypatch):
    """Checkpoints and the reference-feature cache (safetensors, written 0600 by the library) as config.yaml."""
    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    old = os.umask(0o022)
    try:
        train_tiny(tmp_path / "run")
        assert main(["eval", str(tmp_path / "run"), "-n", "200", "--metrics", "fid", "--no-progress"]) == 0
    finally:
        os.umask(old)
    files = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")
    cached = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(cached) == 1 and not list((tmp_path / "cache").rglob("*.tmp*"))
    modes = {stat.S_IMODE(f.stat().st_mode) for f in [*files, *cached, tmp_path / "run" / "config.yaml"]}
    assert modes == {0o644}


def test_warnings_are_one_genbits_line(tmp_path, capsys):
    train_tiny(tmp_path / "run")
    newest = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated: skipped with a warning, the previous one is used
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "-n", "200", "--metrics", "nll", "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("genbits: warning: skipping step-000000020.safetensors") and "UserWarning" not in err[0]


def test_only_rank_zero_prints_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert main(["config", "flow-ring"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["config", "flow-ring"]) == 0
    assert "name: flow" in capsys.readouterr().out


def test_experiments_record_where_they_ran_and_print_their_table(tmp_path, capsys):
    assert main(["experiment", "dirac-gan", "--run-dir", str(tmp_path), "--steps", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| rule |" in out and "verdict" in out and '"predicted_rho"' not in out  # the table, not the JSON
    where = {"device": "cpu", "workers": None}
    assert json.loads((tmp_path / "results.json").read_text())["placement"] == where
    assert json.loads((tmp_path / "provenance.json").read_text())["placement"] == where


@pytest.mark.parametrize(
    "argv,message",
    [
        (["dirac-gan", "--device", "cuda"], "--device cuda: dirac-gan runs on cpu only; the Dirac-GAN has two"),
        (["mode-seeking", "--workers", "2"], "--workers: mode-seeking trains one run at a time"),
        (["gan-mog", "--workers", "0"], "--workers: 0 must be >= 1"),
    ],
)
def test_experiment_placement_is_checked_before_any_work(argv, message, tmp_path, capsys):
    try:
        code = main(["experiment", *argv, "--run-dir", str(tmp_path / "x"), "--no-progress"])
    except SystemExit as exit_:  # argparse's own refusals (counts) exit from parse_args
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_fix(tmp_path, capsys):
    assert main(["experiment", "mode-seeking", "--device", "cuda", "--run-dir", str(tmp_path / "x")]) == 2
    assert "no CUDA device is visible here; use --device cpu or auto" in capsys.readouterr().err


def test_pooled_experiments_run_one_process_on_a_gpu_unless_told():
    from genbits.experiments.placement import Placement

    assert Placement("cuda").pool(cpu_default=8) == 1
    assert Placement("cpu").pool(cpu_default=8) == 8
    assert Placement("cuda", workers=3).pool(cpu_default=8) == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "flow-ring"],
        ["eval", "runs/x"],
        ["sweep", "flow-ring"],
        ["demo"],
        ["experiment", "mode-seeking"],
        ["features", "train", "digits"],
    ],
)
def test_every_long_command_takes_no_progress(argv):
    from genbits.cli import parser

    assert parser().parse_args([*argv, "--no-progress"]).no_progress
