"""Checkpoints: one safetensors file per step — tensors in the body, everything else as JSON in its header.

Nothing is ever unpickled. A file is written to a temporary name, fsynced and renamed, so a crash leaves either
the old set of checkpoints or the new one. A truncated file is skipped with a warning (the previous one is used);
a file that is not a genbits checkpoint, or belongs to another configuration, is refused.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genbits.errors import CheckpointError

FORMAT = "genbits-checkpoint"
VERSION = "1"
NAME = re.compile(r"^step-(\d{9})\.safetensors$")


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file that cannot be read whole (a crash or a full disk cut it short)."""


def flatten(state: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``; collect the tensors."""
    if isinstance(state, torch.Tensor):
        key = path or "tensor"
        tensors[key] = state.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(state, dict):
        for k in state:
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint keys must be str or int, got {k!r} at {path}")
        # int keys (optimizer state) are tagged so they come back as ints
        return {"__dict__": [[k, flatten(v, tensors, f"{path}.{k}" if path else str(k))] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return [flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(state)]
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"cannot checkpoint a {type(state).__name__} at {path or 'the top level'}")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.safetensors"


def save(directory: Path, step: int, state: dict[str, Any], config_hash: str, keep: int) -> Path:
    """Write the checkpoint of ``step`` atomically and keep only the ``keep`` newest."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "step": str(step),
        "config_hash": config_hash,
        "state": json.dumps(skeleton),
    }
    path = checkpoint_path(directory, step)
    write_safetensors(tensors, path, metadata)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (temporary name, fsync, rename) with the permissions of any other file
    the user creates (0666 minus the umask; safetensors itself writes 0600, unreadable to a group that shares runs).
    The temporary name is the process's own, so processes writing the same file (sweep workers filling one
    reference-feature cache) never write into each other's."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if NAME.match(p.name))


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint file holds, from its name."""
    return int(NAME.match(path.name).group(1))


def read_metadata(path: Path) -> dict[str, str]:
    """The JSON header of a safetensors file, read without loading (or unpickling) anything."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100_000_000:
                raise ValueError("bad header size")
            header = json.loads(f.read(size))
        return header.get("__metadata__") or {}
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"{path} is not a readable safetensors file ({e})") from None


def load(path: Path, config_hash: str | None = None) -> tuple[int, dict[str, Any]]:
    """Read one checkpoint; raise CheckpointError for truncated, foreign or mismatched files."""
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a genbits checkpoint (no '{FORMAT}' header); refusing to load it")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {meta.get('version')}, expected {VERSION}")
    if config_hash is not None and meta.get("config_hash") != config_hash:
        raise CheckpointError(
            f"{path} was written by a different configuration (hash {meta.get('config_hash')} != {config_hash})"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptCheckpoint(f"{path} is truncated or corrupt ({e})") from None
    return int(meta["step"]), unflatten(json.loads(meta["state"]), tensors)


def load_latest(directory: Path, config_hash: str | None = None) -> tuple[Path, int, dict[str, Any]] | None:
    """The newest checkpoint that loads; truncated ones are skipped with a warning, foreign ones refused."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return (path, *load(path, config_hash))
        except CorruptCheckpoint as e:
            warnings.warn(f"skipping {path.name}: {e}; falling back to the previous checkpoint", stacklevel=2)
    return None
