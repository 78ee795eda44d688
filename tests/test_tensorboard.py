"""train.tensorboard=true: the event files mirror metrics.jsonl and the sample plots, across resumes and rollbacks."""

import sys
from collections import defaultdict
from pathlib import Path

import pytest

from genbits import load_config
from genbits.cli import main
from genbits.errors import ConfigError
from genbits.train import checkpoint, train
from genbits.train.rundir import RunDir

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402

FAST = ["model.name=gaussian", "train.batch_size=128", "train.tensorboard=true"]  # a flow takes 10x longer


def board(run_dir: Path) -> EventAccumulator:
    """What TensorBoard shows: every event kept (no sampling), purges applied."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    return events.Reload()


def shown(events: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def logged(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as (step, value) per key: what the event files must hold."""
    series = defaultdict(list)
    for record in RunDir(run_dir).metrics():
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                series[key].append((record["step"], value))
    return dict(series)


def assert_mirrors_metrics(run_dir: Path) -> EventAccumulator:
    events = board(run_dir)
    scalars, expected = shown(events), logged(run_dir)
    assert scalars.keys() == expected.keys()
    for tag, series in expected.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in series], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in series], rel=1e-6), tag
    return events


def test_scalars_and_sample_plots_mirror_the_run(tmp_path):
    overrides = ["train.steps=40", "train.log_every=10", "train.sample_every=20", "train.diagnostics=true", *FAST]
    train(load_config("flow-ring", overrides), tmp_path, progress=False)
    events = assert_mirrors_metrics(tmp_path)
    tags = events.Tags()["scalars"]
    assert {"loss", "lr", "samples", "time"} <= set(tags)
    assert any(tag.startswith("grad_norm") for tag in tags)  # the diagnostics' dynamics are mirrored too
    images = events.Images("samples")
    assert [i.step for i in images] == [20, 40]
    assert all(i.width > 100 and i.height > 100 and i.encoded_image_string.startswith(b"\x89PNG") for i in images)


def test_a_resumed_run_shows_each_step_once(tmp_path):
    """The first process trains to 20 and is 'killed' before its checkpoint at 20 is written (logged 15 and 20 and a
    sample plot past its last checkpoint, 10); the rerun, extended to 40, resumes from 10 and logs them again."""
    overrides = ["train.log_every=5", "train.sample_every=10", "train.checkpoint_every=10", *FAST]
    train(load_config("flow-ring", ["train.steps=20", *overrides]), tmp_path, progress=False)
    checkpoint.checkpoint_path(tmp_path / "checkpoints", 20).unlink()
    train(load_config("flow-ring", ["train.steps=40", *overrides]), tmp_path, progress=False)

    raw = [e.step for f in sorted((tmp_path / "tensorboard").iterdir()) for e in EventFileLoader(str(f)).Load()]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 2 and raw.count(20) > raw.count(30)  # written twice
    events = assert_mirrors_metrics(tmp_path)
    assert [s for s, _ in shown(events)["loss"]] == list(range(5, 41, 5))
    assert [i.step for i in events.Images("samples")] == [10, 20, 30, 40]


def test_a_nan_rollback_is_mirrored(tmp_path):
    """Steps logged between the last checkpoint and the NaN are hidden; the rollback's LR scale is a scalar."""
    overrides = [
        "train.steps=30",
        "train.log_every=1",
        "train.sample_every=null",
        "optim.optimizer=sgd",
        "optim.lr=1e4",
        "train.on_nan=rollback",
        "train.nan_lr_factor=1e-5",
        "train.checkpoint_every=10",
        *FAST,
    ]
    train(load_config("flow-ring", overrides), tmp_path, progress=False)
    events = assert_mirrors_metrics(tmp_path)
    assert "lr_scale" in events.Tags()["scalars"]
    assert [s for s, _ in shown(events)["loss"]] == list(range(1, 31))


def test_missing_package_is_one_config_error_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now fails as if not installed
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"pip install 'genbits\[tensorboard\]'") as error:
        train(load_config("flow-ring", ["train.steps=2", *FAST]), run_dir, progress=False)
    assert "\n" not in str(error.value) and not run_dir.exists()

    overrides = [arg for o in ("train.steps=2", "train.tensorboard=true") for arg in ("--set", o)]
    assert main(["train", "flow-ring", *overrides, "--run-dir", str(run_dir), "--no-progress"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not run_dir.exists()
