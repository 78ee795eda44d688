"""The CLI end to end: train → sample → eval → report, list and --help."""

import json

import numpy as np
import pytest

from genbits.cli import main, parser


def test_train_sample_eval_report(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "flow-ring",
                "--set",
                "model.name=gaussian",
                "--set",
                "train.steps=50",
                "--set",
                "train.sample_every=25",
                "--run-dir",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert {p.name for p in (run / "samples").iterdir()} == {"step-0000025.png", "step-0000050.png"}
    assert main(["sample", str(run), "-n", "300", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (300, 2)
    assert main(["sample", str(run), "-n", "300", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["sample", str(run), "--out", str(tmp_path / "s.txt")]) == 2
    assert main(["sample", str(run), "--class", "3"]) == 1
    assert main(["eval", str(run), "-n", "2000"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert {"test_nll", "true_nll", "gap"} <= result.keys()
    assert result["gap"] == pytest.approx(result["test_nll"] - result["true_nll"])
    assert result["gap"] > 0  # a single Gaussian is far from the ring: KL(p*‖q) > 0
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html and "test_nll" in html and "Config" in html


def test_list_shows_presets_and_components(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in (
        "flow-ring",
        "flow-reverse-kl",
        "ring",
        "fashion-mnist",
        "flow",
        "likelihood",
        "reverse-kl",
        "gd",
    ):
        assert word in out


@pytest.mark.parametrize(
    "command", ["train", "sample", "eval", "report", "demo", "list", "experiment", "sweep", "features"]
)
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: genbits" in out and (command in ("demo", "list") or "example" in out)


def run_main(argv, capsys):
    """main() as the shell sees it: (exit code, stderr); argparse's own errors exit through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def tree(path):
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_bad_inputs_fail_with_one_line_and_change_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    steps = ["--set", "model.name=gaussian", "--set", "train.steps=6", "--set", "train.sample_every=0"]
    assert main(["train", "flow-ring", *steps, "--run-dir", str(run), "--no-progress"]) == 0
    (tmp_path / "some_file").write_text("not a run")
    capsys.readouterr()
    before = tree(tmp_path)
    cases = {
        ("report", str(tmp_path / "nonexistent")): (1, "not a genbits run directory"),
        ("sample", str(run), "--out", "missing_dir/x.npy"): (2, "missing_dir does not exist"),
        ("sample", str(run), "--out", "x.txt"): (2, ".txt is not supported"),
        ("sample", str(run), "-n", "0"): (2, "-n: 0 must be >= 1"),
        ("experiment", "dirac-gan", "--steps", "-3"): (2, "--steps: -3 must be >= 1"),
        ("experiment", "dirac-gan", "--steps", "0"): (2, "--steps: 0 must be >= 1"),
        ("experiment", "dirac-gan", "--seeds", "0"): (2, "--seeds: 0 must be >= 1"),
        ("experiment", "dirac-gan", "--run-dir", "some_file"): (2, "some_file is a file"),
        ("demo", "--steps", "0"): (2, "--steps: 0 must be >= 1"),
        ("train", "flow-ring", "--run-dir", "some_file"): (2, "some_file is a file"),
        ("sweep", "flow-ring", "--grid", "optim.lr=1e-3,1e-2", "--workers", "0"): (2, "--workers: 0 must be >= 1"),
        ("features", "train", "digits", "--out", "missing_dir/d.safetensors"): (2, "missing_dir does not exist"),
        ("train", "flow-ring", *steps[:2], "--set", "train.steps=3", *steps[4:], "--run-dir", str(run)): (
            2,
            "already trained 6",
        ),
    }
    for argv, (expected, message) in cases.items():
        code, err = run_main(list(argv), capsys)
        assert code == expected and message in err, (argv, code, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert tree(tmp_path) == before
    assert not (tmp_path / "runs").exists()


def test_an_unchanged_finished_run_says_so(tmp_path, capsys):
    argv = ["train", "flow-ring", "--set", "model.name=gaussian", "--set", "train.steps=4", "--run-dir", str(tmp_path)]
    assert main([*argv, "--no-progress"]) == 0
    assert "trained 4 steps" in capsys.readouterr().out
    assert main([*argv, "--no-progress"]) == 0
    assert "already finished at step 4" in capsys.readouterr().out
