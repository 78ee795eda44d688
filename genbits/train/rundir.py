"""The run directory: resolved config, provenance, metrics.jsonl, checkpoints/, samples/, tensorboard/ (the contract
with users)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from genbits.config import LENGTH, OBSERVE_ONLY, Config, diff, load_config
from genbits.errors import ConfigError, GenbitsError


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file = self.path / "config.yaml"
        self.metrics_file = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"
        self.tensorboard = self.path / "tensorboard"  # train.tensorboard=true: event files mirroring metrics.jsonl

    def exists(self) -> bool:
        """Whether a run lives here; a path that is a file can never hold one and is refused."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file, not a run directory; choose another directory")
        return self.config_file.exists()

    def require(self) -> None:
        """Refuse a directory that holds no run (before anything reads from it)."""
        if not self.exists():
            raise GenbitsError(
                f"{self.path} is not a genbits run directory (no config.yaml); train one with `genbits train`"
            )

    def stored_config(self) -> Config:
        return load_config(self.config_file)

    def check_compatible(self, config: Config) -> list[str]:
        """Refuse any config change on an existing run other than its length (``train.steps`` or ``train.samples``)
        and what only observes it; returns the observe-only keys that changed."""
        changed = diff(self.stored_config(), config)
        observed = [k for k in changed if k in OBSERVE_ONLY]
        changed = [k for k in changed if k not in LENGTH and k not in OBSERVE_ONLY]
        if changed:
            raise ConfigError(
                f"{self.path} already holds a run with a different config (changed: {', '.join(changed)}); "
                "use a new --run-dir, or change only train.steps (or train.samples) to extend this run"
            )
        return observed

    def create(self, config: Config) -> None:
        for d in (self.path, self.checkpoints, self.samples):
            d.mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        self.metrics_file.write_text("")  # a run restarted from scratch (no readable checkpoint) logs afresh
        (self.path / "provenance.json").write_text(json.dumps(provenance(), indent=2))

    def write_config(self, config: Config) -> None:
        self.config_file.write_text(config.to_yaml())

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop records after ``step``: a resumed run rewrites them exactly."""
        if not self.metrics_file.exists():
            return
        kept = [line for line in self.metrics_file.read_text().splitlines() if json.loads(line)["step"] <= step]
        self.metrics_file.write_text("".join(line + "\n" for line in kept))

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]


def git_revision() -> str | None:
    """The commit genbits runs from, where it runs from a git checkout (None for an installed wheel)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def provenance() -> dict[str, Any]:
    """What produced a run: versions, git revision, command line, threads, device."""
    versions = {}
    for package in ("genbits", "torch", "numpy", "scipy", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_revision": git_revision(),
        "command": sys.argv,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
