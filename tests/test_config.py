import dataclasses
import re

import pytest

from bench import config as config_lib
from bench import registry
from tasks.toy import SUITE as TOY


@dataclasses.dataclass(frozen=True)
class Scales:
    sparse: float = 1.0
    rep: float = 0.1


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    units: int = 64
    depths: tuple[int, ...] = (1, 2)
    act: str = "silu"
    symlog: bool = True
    loss_scales: Scales = Scales()
    optional: float | None = None


def base():
    return config_lib.Config(
        run=config_lib.RunConfig(), replay=config_lib.ReplayConfig(), logger=config_lib.LoggerConfig(),
        env=TOY.protocol_cls(), agent=AgentConfig(),
    )


def test_dotted_overrides_are_coerced_to_field_types():
    overrides = config_lib.parse_overrides(
        ["--loss_scales.sparse", "10", "--run.steps", "1e5", "--units=128", "--symlog", "false",
         "--depths", "3,4,5", "--env.size", "32", "--optional", "0.5", "--logger.outputs", "jsonl,wandb"]
    )
    config = config_lib.apply(base(), overrides)
    assert config.agent.loss_scales.sparse == 10.0 and isinstance(config.agent.loss_scales.sparse, float)
    assert config.run.steps == 100000 and isinstance(config.run.steps, int)
    assert config.agent.units == 128
    assert config.agent.symlog is False
    assert config.agent.depths == (3, 4, 5)
    assert config.env.size == 32
    assert config.agent.optional == 0.5
    assert config.logger.outputs == ("jsonl", "wandb")
    assert config_lib.apply(base(), {"optional": "none"}).agent.optional is None


def test_unknown_key_suggests_the_closest():
    with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'loss_scales\.sprase'.*'loss_scales\.sparse'"):
        config_lib.apply(base(), {"loss_scales.sprase": "1"})
    with pytest.raises(config_lib.ConfigError, match=r"'run\.steps'"):
        config_lib.apply(base(), {"run.stesp": "1"})


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("units", "many", "units: expected an int, got 'many'"),
        ("units", "1.5", "units: expected an int"),
        ("loss_scales.sparse", "high", "loss_scales.sparse: expected a float"),
        ("symlog", "maybe", "symlog: expected a bool"),
        ("loss_scales", "3", "is a section"),
    ],
)
def test_wrong_type_names_field_and_type(key, value, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.apply(base(), {key: value})


def test_yaml_style_nested_presets_and_round_trip():
    config = config_lib.apply(base(), {"loss_scales": {"sparse": 3}, "run": {"train_ratio": 64}})
    assert config.agent.loss_scales.sparse == 3.0 and config.run.train_ratio == 64.0
    data = config.to_dict()
    rebuilt = config_lib.Config(
        run=config_lib.from_dict(config_lib.RunConfig, data["run"]),
        replay=config_lib.from_dict(config_lib.ReplayConfig, data["replay"]),
        logger=config_lib.from_dict(config_lib.LoggerConfig, data["logger"]),
        env=config_lib.from_dict(type(config.env), data["env"]),
        agent=config_lib.from_dict(AgentConfig, data["agent"]),
    )
    assert rebuilt == config and rebuilt.hash() == config.hash()


def test_hash_is_stable_and_ignores_logger_settings():
    a = base()
    assert a.hash() == base().hash() and len(a.hash()) == 10
    assert config_lib.apply(a, {"logger.outputs": "jsonl,tensorboard"}).hash() == a.hash()
    assert config_lib.apply(a, {"units": 65}).hash() != a.hash()
    assert config_lib.apply(a, {"run.steps": 10}).hash() != a.hash()


def test_missing_value_and_stray_argument_are_errors():
    with pytest.raises(config_lib.ConfigError, match="missing a value"):
        config_lib.parse_overrides(["--units"])
    with pytest.raises(config_lib.ConfigError, match="unexpected argument"):
        config_lib.parse_overrides(["units", "3"])


def test_presets_apply_in_order_after_the_suite_preset(tmp_path):
    presets = tmp_path / "presets.yaml"
    presets.write_text("toy: {units: 8, loss_scales: {sparse: 2}}\nbig: {units: 512}\nsparse10: {loss_scales.sparse: 10}\n")
    spec = registry.AgentSpec("t", AgentConfig, lambda *a: None, presets=(str(presets),))
    config = registry.build_config(spec, TOY, ["sparse10", "big"], {"units": "99"})
    assert config.agent.units == 99 and config.agent.loss_scales.sparse == 10.0
    config = registry.build_config(spec, TOY, ["big"])
    assert config.agent.units == 512 and config.agent.loss_scales.sparse == 2.0
    with pytest.raises(config_lib.ConfigError, match="unknown preset 'bgi'.*'big'"):
        registry.build_config(spec, TOY, ["bgi"])


def _dreamer_config(overrides):
    from agents.dreamerv3.config import DreamerV3Config

    spec = registry.AgentSpec("d", DreamerV3Config, lambda *a: None)
    return registry.build_config(spec, TOY, (), overrides)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("run.save_every", "0", "run.save_every: must be >= 1, got 0"),  # used to loop forever
        ("run.steps", "-5", "run.steps: must be >= 0, got -5"),  # used to run the whole budget
        ("run.envs", "0", "run.envs: must be >= 1, got 0"),
        ("run.eval_episodes", "-1", "run.eval_episodes: must be >= 0, got -1"),
        ("run.log_every", "0", "run.log_every: must be >= 1"),
        ("run.worker_timeout", "0", "run.worker_timeout: must be > 0"),
        ("run.train_ratio", "nan", "run.train_ratio: must be a finite number, got nan"),
        ("run.save_every_secs", "inf", "run.save_every_secs: must be a finite number, got inf"),
        ("replay.recency", "1.5", "replay.recency: must be >= 0 and <= 1, got 1.5"),
        ("replay.capacity", "0", "replay.capacity: must be >= 1"),
        ("optimizer.lr", "0", "optimizer.lr: must be > 0, got 0.0"),
        ("optimizer.lr", "-inf", "optimizer.lr: must be a finite number"),
        ("batch_size", "0", "batch_size: must be >= 1"),
        ("imagination.horizon", "0", "imagination.horizon: must be >= 1"),
        ("rssm.unimix", "2", "rssm.unimix: must be >= 0 and <= 1"),
        ("loss_scales.rep", "nan", "loss_scales.rep: must be a finite number"),  # no declared range: still finite
    ],
)
def test_out_of_range_values_name_their_key(key, value, message):
    with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
        _dreamer_config({key: value})


def test_range_edges_are_accepted():
    config = _dreamer_config({"run.steps": "0", "run.eval_episodes": "0", "replay.recency": "1", "optimizer.agc": "0"})
    assert config.run.steps == 0 and config.replay.recency == 1.0 and config.agent.optimizer.agc == 0.0


def test_a_bad_range_on_the_command_line_is_one_line_and_writes_nothing(tmp_path, capsys):
    from bench import cli

    code = cli.main(["run", "--agent", "random", "--suite", "toy", "--task", "reach", "--logdir", str(tmp_path),
                     "--run.save_every", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err == "bench: error: run.save_every: must be >= 1, got 0\n"
    assert not any(tmp_path.iterdir())
