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
