"""Config loading: defaults, presets, overrides, and a table of bad inputs with the messages users see."""

import pytest

from genbits.config import Config, diff, load_config, presets
from genbits.errors import ConfigError


def test_defaults_and_presets_validate():
    assert load_config().train.steps == Config().train.steps
    assert {"flow-ring", "flow-moons", "flow-reverse-kl"} <= set(presets())
    for name in presets():
        load_config(name)


def test_overrides_coerce_types_and_reach_nested_fields():
    c = load_config(
        "flow-ring",
        [
            "optim.lr=1e-3",
            "train.steps=7",
            "data.std=0.05",
            "train.device=cpu",
            "optim.players.model.lr=2e-4",
            "optim.betas=0.5,0.9",
        ],
    )
    assert c.optim.lr == 1e-3 and isinstance(c.optim.lr, float)  # YAML reads 1e-3 as a string; we coerce
    assert c.train.steps == 7 and c.data.options["std"] == 0.05
    assert c.optim.for_player("model").lr == 2e-4 and c.optim.for_player("model").betas == (0.5, 0.9)
    assert c.optim.for_player("other").lr == 1e-3


def test_component_shorthand_and_name_change_drops_old_options():
    c = load_config("flow-ring", ["data=moons"])
    assert c.data.name == "moons" and "radius" not in c.data.options


def test_yaml_round_trip_and_hash_ignores_steps(tmp_path):
    c = load_config("flow-ring", ["train.steps=11"])
    path = tmp_path / "c.yaml"
    path.write_text(c.to_yaml())
    again = load_config(path)
    assert again == c and diff(c, again) == []
    longer = load_config(path, ["train.steps=99"])
    assert longer.hash() == c.hash() and diff(c, longer) == ["train.steps"]
    assert load_config(path, ["optim.lr=0.5"]).hash() != c.hash()


BAD = [
    (["train.stesp=5"], "train.stesp", "did you mean 'steps'"),
    (["train.steps=0"], "train.steps", ">= 1"),
    (["train.steps=abc"], "train.steps", "not an int"),
    (["train.batch_size=2.5"], "train.batch_size", "not an int"),
    (["optim.lr=-1"], "optim.lr", "> 0.0"),
    (["optim.lr=fast"], "optim.lr", "not a number"),
    (["train.device=tpu"], "train.device", "'cpu'"),
    (["train.precision=fp8"], "train.precision", "'bf16'"),
    (["train.precision=float64"], "train.precision", "'fp64'"),
    (["train.sample_every=-1"], "train.sample_every", ">= 0"),
    (["optim.optimizer=adamm"], "optim.optimizer", "did you mean 'adam'"),
    (["optim.betas=0.9"], "optim.betas", "not a list"),
    (["optim.betas=0.9,0.99,0.1"], "optim.betas", "exactly 2"),
    (["optim.players.model.lrr=1"], "optim.players.model.lrr", "did you mean 'lr'"),
    (["data.name=rign"], "data", "did you mean 'ring'"),
    (["data.radius=big"], "data.radius", "not a number"),
    (["data.colour=red"], "data.colour", "allowed:"),
    (["model.name=flwo"], "model", "did you mean 'flow'"),
    (["objective=likelyhood"], "objective", "did you mean 'likelihood'"),
    (["optim.rule=gdd"], "optim.rule", "did you mean 'gd'"),
    (["train.ema_decay=1.5"], "train.ema_decay", "<= 1.0"),
    (["trian.steps=5"], "trian", "did you mean 'train'"),
    (["train.steps"], "--set 'train.steps'", "section.field=value"),
]


@pytest.mark.parametrize("overrides, field, hint", BAD, ids=[b[0][0] for b in BAD])
def test_bad_config_names_field_and_allowed_values(overrides, field, hint):
    with pytest.raises(ConfigError) as info:
        load_config("flow-ring", overrides)
    message = str(info.value)
    assert message.startswith(field) or f" {field}" in message or f"{field}:" in message, message
    assert hint in message, message


def test_out_of_range_component_option_is_reported_when_built():
    from genbits.train.parts import build_parts

    with pytest.raises(ConfigError, match=r"data \(ring\): .*std"):
        build_parts(load_config("flow-ring", ["data.std=-1"]))


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("flow-rnig")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_sample_every_null_means_no_plots_and_keeps_the_hash_of_plain_values():
    assert load_config("flow-ring", ["train.sample_every=null"]).train.sample_every is None
    assert load_config("flow-ring", ["train.sample_every=500"]).hash() == load_config("flow-ring").hash()


def test_a_budget_of_samples_sets_the_steps():
    config = load_config("flow-ring", ["train.samples=1000", "train.batch_size=64"])
    assert config.train.steps == 16  # ceil(1000 / 64)
    longer = load_config("flow-ring", ["train.samples=2000", "train.batch_size=64"])
    assert longer.hash() == config.hash()  # the length of a run is not its identity


def test_a_registered_class_is_validated_against_its_init():
    """Options are coerced to __init__'s types (here int from a YAML string), not to class-level annotations."""
    from genbits.registry import Registry

    registry = Registry("thing")

    @registry.register("counter")
    class Counter:
        count: str  # a class attribute annotation that is not the constructor's

        def __init__(self, count: int = 1):
            self.count = count

    assert registry.build("counter", {"count": "3"}).count == 3
    with pytest.raises(ConfigError, match=r"thing\.count"):
        registry.build("counter", {"count": "three"})


def test_a_field_added_at_its_default_keeps_the_identity_of_earlier_runs():
    """A train/optim field added later, whose default keeps the old behaviour, changes no earlier run's hash (its
    checkpoints still resume); set away from its default it does, like any other field."""
    import dataclasses

    from genbits.config import TrainConfig

    @dataclasses.dataclass
    class Later(TrainConfig):
        new_option: int = 0

    config = load_config("flow-ring")
    later = dataclasses.replace(config, train=Later(**dataclasses.asdict(config.train)))
    assert later.hash() == config.hash()
    assert dataclasses.replace(later, train=dataclasses.replace(later.train, new_option=1)).hash() != config.hash()
    assert load_config("flow-ring", ["optim.decay=matrices"]).hash() != config.hash()
