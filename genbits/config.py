"""Configuration: nested dataclasses with working defaults, YAML files and ``--set a.b=value`` overrides.

Every value is checked once, here, with errors that name the dotted field, the bad value and what is allowed.
Components (data, model, objective, update rule) are ``{name, **options}``; their options are validated against the
registered factory's signature (see ``genbits.registry``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from genbits.errors import ConfigError
from genbits.registry import DATASETS, MODELS, OBJECTIVES, RULES, Registry, closest, coerce

PRESET_DIR = Path(__file__).parent / "configs"


def bounded(default: Any, low: float | None = None, high: float | None = None, strict: bool = False) -> Any:
    """A dataclass field with an allowed range, checked by ``validate``."""
    return field(default=default, metadata={"low": low, "high": high, "strict": strict})


@dataclass
class Component:
    """A named component and its options; YAML ``{name: ring, std: 0.05}`` or just ``ring``."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass
class PlayerOptim:
    """Per-player overrides of ``optim``; None inherits the shared value (games need different rates)."""

    optimizer: Literal["adam", "adamw", "adamax", "sgd", "rmsprop"] | None = None
    lr: float | None = bounded(None, 0.0, strict=True)
    betas: tuple[float, float] | None = None
    momentum: float | None = bounded(None, 0.0, 1.0)
    weight_decay: float | None = bounded(None, 0.0)
    eps: float | None = bounded(None, 0.0, strict=True)
    grad_clip: float | None = bounded(None, 0.0)
    fused: bool | None = None


@dataclass
class OptimConfig:
    """The update rule and the optimizer every player gets unless ``players.<name>`` overrides a value."""

    rule: Component = field(default_factory=lambda: Component("gd"))
    optimizer: Literal["adam", "adamw", "adamax", "sgd", "rmsprop"] = "adam"
    lr: float = bounded(1e-3, 0.0, strict=True)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = bounded(0.0, 0.0, 1.0)
    weight_decay: float = bounded(0.0, 0.0)
    decay: Literal["all", "matrices"] = "all"  # matrices: weight decay on weight matrices only (optim/rules.py)
    eps: float = bounded(1e-8, 0.0, strict=True)
    grad_clip: float = bounded(0.0, 0.0)  # max global gradient norm per player; 0 turns clipping off
    # adam/adamw as torch's one fused kernel: ~3× faster optimizer step on a CPU thread, the same update up to float
    # rounding (so not the numbers of runs recorded without it: off by default)
    fused: bool = False
    warmup_steps: int = bounded(0, 0)
    schedule: Literal["constant", "cosine"] = "constant"
    final_lr_ratio: float = bounded(0.0, 0.0, 1.0)  # cosine decays to lr * final_lr_ratio
    players: dict[str, PlayerOptim] = field(default_factory=dict)

    def for_player(self, name: str) -> PlayerOptim:
        """The resolved settings of one player: its overrides on top of the shared values."""
        own = self.players.get(name, PlayerOptim())
        return PlayerOptim(
            **{
                f.name: getattr(own, f.name) if getattr(own, f.name) is not None else getattr(self, f.name)
                for f in dataclasses.fields(PlayerOptim)
            }
        )


@dataclass
class TrainConfig:
    """How long, how big, where, and how often to log, sample and checkpoint."""

    steps: int = bounded(2000, 1)
    samples: int = bounded(0, 0)  # > 0: a budget of samples seen, which sets steps = ceil(samples / batch_size)
    batch_size: int = bounded(512, 1)  # global batch: split across processes under torchrun
    accumulate: int = bounded(1, 1)  # micro-batches per step: the same gradient, 1/accumulate of the memory
    compile: bool = False  # torch.compile the model's forward pass (where torch.compile works)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # fp64: model, batches and gradients in float64 (exact small problems: the divergence lab); bf16/fp16: autocast
    precision: Literal["fp32", "bf16", "fp16", "fp64"] = "fp32"
    threads: int = bounded(0, 0)  # torch intra-op threads; 0 keeps torch's default
    log_every: int = bounded(10, 1)
    sample_every: int | None = bounded(500, 0)  # 0: sample plots only at the end; null: none at all
    checkpoint_every: int = bounded(500, 1)
    keep_checkpoints: int = bounded(3, 1)
    ema_decay: float = bounded(0.999, 0.0, 1.0)  # 0 turns EMA off; sampling and eval use EMA weights
    on_nan: Literal["stop", "rollback"] = "stop"
    nan_lr_factor: float = bounded(0.5, 0.0, 1.0, strict=True)  # rollback multiplies every LR by this
    max_rollbacks: int = bounded(3, 0)
    eval_samples: int = bounded(10000, 1)  # fresh test samples for sampled datasets
    diagnostics: bool = False  # log grad norms, update ratios and spectral norms (metrics/dynamics.py)
    tensorboard: bool = False  # also write metrics and sample plots to RUN/tensorboard/ (train/tensorboard.py)


LENGTH = ("train.steps", "train.samples")  # changing only these extends (or shortens) a run
OBSERVE_ONLY = (
    "train.diagnostics",
    "train.tensorboard",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
)
"""Settings that watch a run without changing its trajectory (what is logged, plotted, kept): a resumed run may
change them; its config.yaml then records the new values and metrics.jsonl the step where they changed."""


@dataclass
class Config:
    """A whole run: data × model × objective × update rule, and how to train."""

    data: Component = field(default_factory=lambda: Component("ring"))
    model: Component = field(default_factory=lambda: Component("flow"))
    objective: Component = field(default_factory=lambda: Component("likelihood"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self) -> str:
        """Identity of a run: everything but its length, ``train.steps`` / ``train.samples`` (raising it extends a
        run), and what only observes it (``OBSERVE_ONLY``: changing it on resume changes no number of the run).

        Of ``optim`` and ``train`` only the fields set away from their defaults count, as a component's options
        count only where given: a field added later, whose default keeps what runs did before it, leaves the
        identity of every earlier run, so their checkpoints still resume."""
        plain = self.to_dict()
        for key in (*LENGTH, *OBSERVE_ONLY):
            section, name = key.split(".")
            plain[section].pop(name)
        for section in ("optim", "train"):
            defaults = _to_plain(type(getattr(self, section))())
            plain[section] = {k: v for k, v in plain[section].items() if v != defaults[k]}
        return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


COMPONENT_TABLES: dict[str, Registry] = {
    "data": DATASETS,
    "model": MODELS,
    "objective": OBJECTIVES,
    "optim.rule": RULES,
}


def _to_plain(value: Any) -> Any:
    if isinstance(value, Component):
        return {"name": value.name, **{k: _to_plain(v) for k, v in value.options.items()}}
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    """Turn a plain mapping into dataclass ``cls``, coercing and range-checking every field."""
    if cls is Component:
        if isinstance(raw, str):
            return Component(raw)
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ConfigError(f"{where}: expected a name or a mapping with a 'name' key, got {raw!r}")
        return Component(raw["name"], {k: v for k, v in raw.items() if k != "name"})
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"{path}: unknown key{closest(key, fields)}; allowed: {', '.join(fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) or hint is Component:
            values[key] = _build(hint, value, path)
        elif key == "players":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping from player name to settings")
            values[key] = {p: _build(PlayerOptim, v or {}, f"{path}.{p}") for p, v in value.items()}
        else:
            values[key] = _check_range(coerce(value, hint, path), fields[key], path)
    return cls(**values)


def _check_range(value: Any, f: dataclasses.Field, path: str) -> Any:
    low, high, strict = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("strict", False)
    if value is None or (low is None and high is None):
        return value
    too_low = low is not None and (value <= low if strict else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if strict else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        raise ConfigError(f"{path}: {value!r} is out of range; allowed: {' and '.join(s for s in (lo, hi) if s)}")
    return value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into ``base``; a component whose name changes drops the old options."""
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        if (
            isinstance(old, dict)
            and isinstance(value, dict)
            and not ("name" in old and "name" in value and old["name"] != value["name"])
        ):
            merged[key] = _merge(old, value)
        elif isinstance(old, dict) and "name" in old and isinstance(value, str):
            merged[key] = {"name": value} if value != old["name"] else old
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}``; the value is read as YAML (``1e-3`` as a number)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.field=value, e.g. --set optim.lr=3e-4")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {text!r}: empty part in the key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_source(source: str | Path) -> dict[str, Any]:
    """Read a preset name or a YAML file into a plain mapping."""
    path = Path(source)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{source}.yaml"
        if not path.exists():
            raise ConfigError(
                f"config {str(source)!r}: neither a file nor a preset{closest(str(source), presets())}; "
                f"presets: {', '.join(presets())}"
            )
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping of sections at the top level")
    return raw


def load_config(source: str | Path | dict[str, Any] | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Defaults ← preset/YAML file/mapping ← ``--set`` overrides, then validated as a whole."""
    plain = Config().to_dict()
    if source is not None:
        plain = _merge(plain, source if isinstance(source, dict) else read_source(source))
    for text in overrides:
        plain = _merge(plain, parse_override(text))
    return validate(_build(Config, plain, ""))


def components(config: Config) -> Iterator[tuple[str, Registry, Component]]:
    """(dotted place, its registry, the component there) for every registry-built part of ``config``."""
    for where, table in COMPONENT_TABLES.items():
        section, _, sub = where.partition(".")
        yield where, table, getattr(getattr(config, section), sub) if sub else getattr(config, section)


def validate(config: Config) -> Config:
    """Check every component's name and options against its registry (coercing option types)."""
    import genbits.components  # noqa: F401  (fills the registries)

    for where, table, component in components(config):
        table[component.name]  # noqa: B018  (unknown names raise with a suggestion)
        component.options = table.validate(component.name, component.options, where)
    if config.train.samples:
        config.train.steps = math.ceil(config.train.samples / config.train.batch_size)
    return config


def diff(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""

    def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            out = {}
            for k, v in d.items():
                out.update(flatten(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: d}

    a, b = flatten(old.to_dict()), flatten(new.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
