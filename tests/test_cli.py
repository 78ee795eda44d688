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
    assert main(["sample", str(run), "--class", "3"]) == 2  # an unconditional model takes no class
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
    "command",
    ["train", "config", "runs", "sample", "eval", "report", "demo", "list", "experiment", "sweep", "features"],
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
        ("sample", str(run), "--class", "3", "--out", "x.npy"): (2, "--class 3: the model of"),
        ("sample", str(run), "--steps", "5", "--out", "x.npy"): (
            2,
            "sampling option 'steps' is not understood by gaussian (it takes: temperature)",
        ),
        ("sample", str(run), "--temperature", "0"): (2, "--temperature: 0.0 must be > 0"),
        ("sample", str(run), "--guidance", "nan"): (2, "--guidance: nan must be finite"),
        ("eval", str(run), "--sampler", "ddim"): (2, "sampling option 'sampler' is not understood by gaussian"),
        ("eval", str(run), "--metrics", "nll", "--temperature", "0.5"): (2, "nll draws no samples"),
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


def test_one_checkpoint_evaluated_three_ways_keeps_three_results(tmp_path, capsys, monkeypatch):
    """Sampling options never enter the config: the same run is evaluated at the default temperature and two others,
    without a refusal; sample metrics of each are kept apart, nll (which draws no samples) once at the top."""
    import torch

    from genbits.metrics.fid import fid
    from genbits.runs import load_run
    from genbits.runs.evaluate import test_batch

    monkeypatch.setenv("GENBITS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    train_argv = ["train", "flow-ring", "--set", "train.steps=40", "--set", "train.sample_every=0", "--run-dir"]
    assert main([*train_argv, str(run), "--no-progress"]) == 0
    config = (run / "config.yaml").read_bytes()
    evals = [[], ["--temperature", "0.5"], ["--temperature", "0.8"]]
    for extra in evals:
        assert main(["eval", str(run), "-n", "1000", "--metrics", "nll,fid", "--no-progress", *extra]) == 0
    assert "sampling temperature=0.8:" in capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    assert {"step", "n", "test_nll", "true_nll", "gap", "fid", "samples", "features"} <= result.keys()
    assert set(result["sampling"]) == {"temperature=0.5", "temperature=0.8"}
    for t in (0.5, 0.8):
        entry = result["sampling"][f"temperature={t}"]
        assert entry["how"] == {"temperature": t} and entry["samples"] == 1000 and entry["features"] == "raw"
        assert "test_nll" not in entry  # the likelihood does not depend on how one samples
    fids = [result["fid"], result["sampling"]["temperature=0.5"]["fid"], result["sampling"]["temperature=0.8"]["fid"]]
    assert len(set(fids)) == 3
    # an independent reference: FID of raw coordinates of 1000 samples drawn at T = 0.5 (seed 0) vs the test batch
    loaded = load_run(run)
    fake = loaded.model.sample(1000, generator=torch.Generator().manual_seed(0), temperature=0.5)
    assert fids[1] == pytest.approx(fid(test_batch(loaded, 1000), fake), rel=1e-6)
    # more metrics later: merged into the right place, nothing overwritten
    nll = result["test_nll"]
    assert main(["eval", str(run), "-n", "1000", "--metrics", "modes", "--temperature", "0.5", "--no-progress"]) == 0
    assert main(["eval", str(run), "-n", "1000", "--metrics", "nll", "--no-progress"]) == 0
    again = json.loads((run / "eval.json").read_text())
    assert again["test_nll"] == nll and again["fid"] == fids[0] and "modes" not in again
    assert again["sampling"]["temperature=0.5"]["fid"] == fids[1] and "modes" in again["sampling"]["temperature=0.5"]
    assert again["sampling"]["temperature=0.8"] == result["sampling"]["temperature=0.8"]
    assert (run / "config.yaml").read_bytes() == config
    capsys.readouterr()
    assert main([*train_argv, str(run), "--no-progress"]) == 0  # the run is unchanged: nothing to refuse
    assert "already finished at step 40" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0  # the report shows each way of sampling as its own table
    page = (run / "report.html").read_text()
    assert "sampled with temperature=0.5" in page and "sampled with temperature=0.8" in page
    assert f"<th>fid</th><td>{fids[1]:.4f}</td>" in page


def test_class_conditional_sampling(tmp_path, capsys):
    """--class K draws every sample with label K from a conditional model; a class out of range is one line."""
    import torch

    from genbits.runs import load_run

    run = tmp_path / "gan"
    overrides = ["model.conditioning=concat", "train.steps=3", "train.sample_every=0", "train.checkpoint_every=3"]
    argv = ["train", "gan-ring", *[a for o in overrides for a in ("--set", o)], "--run-dir", str(run)]
    assert main([*argv, "--no-progress"]) == 0
    assert (run / "samples" / "step-0000003.png").is_file()  # the loop's plot: balanced labels
    for k in (2, 5):
        assert main(["sample", str(run), "-n", "64", "--class", str(k), "--out", str(tmp_path / f"{k}.npy")]) == 0
    model = load_run(run).model
    for k in (2, 5):
        expected = model.sample(64, torch.full((64,), k), generator=torch.Generator().manual_seed(0))
        assert np.allclose(np.load(tmp_path / f"{k}.npy"), expected.detach().numpy())
    assert not np.allclose(np.load(tmp_path / "2.npy"), np.load(tmp_path / "5.npy"))
    assert main(["sample", str(run), "-n", "20", "--out", str(tmp_path / "all.npy")]) == 0  # every class in turn
    expected = model.sample(20, torch.arange(20) % 8, generator=torch.Generator().manual_seed(0))
    assert np.allclose(np.load(tmp_path / "all.npy"), expected.detach().numpy())
    assert main(["sample", str(run), "-n", "200", "--out", str(tmp_path / "all.png")]) == 0
    capsys.readouterr()
    for bad in ("8", "-1"):
        code, err = run_main(["sample", str(run), "--class", bad, "--out", str(tmp_path / "x.npy")], capsys)
        assert code == 2 and f"--class {bad}: out of range" in err and "classes 0 to 7" in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npy").exists()


def test_sample_says_how_many_images_its_grid_shows(tmp_path, capsys):
    """An image grid shows at most 64 samples: ``sample -n 100 --out x.png`` says 64, and where the 100 are (.npy)."""
    run = tmp_path / "vae"
    steps = ["--set", "train.steps=2", "--set", "train.sample_every=0", "--set", "train.checkpoint_every=2"]
    assert main(["train", "vae-digits", *steps, "--run-dir", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "100", "--out", str(tmp_path / "grid.png")]) == 0
    assert "wrote 64 samples" in capsys.readouterr().out
    assert main(["sample", str(run), "-n", "100", "--out", str(tmp_path / "all.npy")]) == 0
    assert "wrote 100 samples" in capsys.readouterr().out and np.load(tmp_path / "all.npy").shape[0] == 100
