"""Configuration: frozen dataclasses, YAML presets and dotted overrides coerced to the field type.

A run's configuration has five sections:

* `run`, `replay`, `logger`: the framework's own (below),
* `env`: the suite's protocol dataclass (action repeat, image size, ...),
* `agent`: the agent's config dataclass.

Dotted keys address them as `run.steps`, `replay.capacity`, `env.noops`; keys that start with anything
else address the agent (`loss_scales.sparse` means `agent.loss_scales.sparse`), which keeps the agent's
hyperparameters short on the command line. Resolution order: defaults < suite preset < `--configs`
presets in order < dotted flags. Unknown keys fail with a close-match suggestion; wrong types name the
field and the type expected.

Numeric fields state their range once, where they are declared (`save_every: int = ranged(10000, ge=1)`);
`check_ranges` checks every section against them (and every float for NaN/inf) when the config is
resolved, before any folder is written, so a bad value fails with its key instead of hanging or crashing
the run later.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import operator
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml

SECTIONS = ("run", "replay", "logger", "env", "agent")
# Sections left out of the config hash: they change how a run is watched, not what it computes.
UNHASHED_SECTIONS = ("logger",)
# Fields added after runs were published, each with the value every earlier run had: at that value they are
# left out of the config hash and of the check that a run folder was written by the same config, so earlier
# runs keep their folders and hashes (published boards, resumes); set to anything else, they count.
ADDED_FIELDS = {"run.batch_shards": 1}


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message names the key."""


RANGE = "bench.range"  # dataclass field metadata key holding a `Range`


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric field; None = unbounded on that side."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def bounds(self) -> list[tuple[str, float]]:
        pairs = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return [(op, bound) for op, bound in pairs if bound is not None]

    def problem(self, value) -> str | None:
        """Why `value` is outside the range, or None."""
        if all(_COMPARE[op](value, bound) for op, bound in self.bounds()):
            return None
        return f"must be {' and '.join(f'{op} {bound:g}' for op, bound in self.bounds())}, got {value!r}"


_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def ranged(default, *, ge=None, gt=None, le=None, lt=None):
    """A dataclass field with a default and a range that `check_ranges` enforces."""
    return dataclasses.field(default=default, metadata={RANGE: Range(ge=ge, gt=gt, le=le, lt=lt)})


def _range_problems(obj, prefix: str):
    """(dotted key, problem) of every field of dataclass `obj` (recursively) outside its range or not finite."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _range_problems(value, key + ".")
            continue
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if isinstance(item, float) and not math.isfinite(item):
                yield key, f"must be a finite number, got {item!r}"
            elif isinstance(item, (int, float)) and not isinstance(item, bool) and RANGE in field.metadata:
                problem = field.metadata[RANGE].problem(item)
                if problem:
                    yield key, problem


def check_ranges(config: Config) -> None:
    """Raise ConfigError naming the first key whose value is outside its declared range or not finite."""
    for section in SECTIONS:
        prefix = "" if section == "agent" else f"{section}."
        for key, problem in _range_problems(getattr(config, section), prefix):
            raise ConfigError(f"{key}: {problem}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    steps: int = ranged(0, ge=0)  # agent steps (policy steps); 0 = the suite's budget
    train_ratio: float = ranged(32.0, ge=0)  # replayed steps per policy step (DreamerV3 semantics), see bench.runner
    envs: int = ranged(1, ge=1)  # parallel environment workers
    train_fill: int = ranged(1024, ge=0)  # policy steps collected before the first update
    eval_every: int = ranged(0, ge=0)  # agent steps between periodic evaluation rounds; 0 = only the final evaluation
    eval_episodes: int = ranged(0, ge=0)  # episodes per periodic evaluation; 0 = the suite's protocol default
    final_eval: bool = True  # run the suite's final evaluation protocol after training
    save_every: int = ranged(10000, ge=1)  # agent steps between checkpoints
    save_every_secs: float = ranged(900.0, gt=0)  # also checkpoint at least this often (wall clock)
    log_every: int = ranged(1000, ge=1)  # agent steps between metric records
    report_every: int = ranged(0, ge=0)  # agent steps between agent reports (videos); 0 = at the end only
    max_worker_restarts: int = ranged(10, ge=0)  # a worker that crashes more often than this ends the run
    # seconds an env worker may take to answer one request (a restore replays a whole episode) before it is
    # killed and restarted as crashed; raise it for slow simulators
    worker_timeout: float = ranged(600.0, gt=0)
    # train only on the replay of `replay.load` (THICK's train_only_on_replay): no env interaction except
    # evaluation; `steps` and the log/save/eval/report intervals then count update rounds (bench.runner)
    offline: bool = False
    # split each update into this many equal parts of its batch, one per CPU core, with the same math (up to the
    # order of float sums): a CPU speed option for agents whose spec allows it (`AgentSpec.batch_shards`: every
    # learning agent, not the THICK PlaNet and flat CEM planners); bench/batch_shards.py
    batch_shards: int = ranged(1, ge=1)


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    capacity: int = ranged(5_000_000, ge=1)  # steps held per replay table; oldest evicted (DreamerV3 2024: 5e6)
    chunk: int = ranged(1024, ge=1)  # steps per stored chunk (unit of eviction and of saving)
    online: bool = True  # train once on every fresh sequence first (DreamerV3's online queue)
    recency: float = ranged(0.0, ge=0, le=1)  # fraction of sampled sequences drawn with recency priority
    recency_decay: float = ranged(1e-4, ge=0)  # recency weight exp(-decay * age in steps)
    load: str = ""  # a run folder whose replay this run starts with (THICK's train_from_replay; bench.replay_load)


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    outputs: tuple[str, ...] = ("jsonl", "terminal")  # also "tensorboard", "wandb"
    wandb_project: str = "bench"
    wandb_mode: str = "offline"  # "offline" works without a network; "online" to sync
    progress: bool = True


FRAMEWORK_SECTIONS = {"run": RunConfig, "replay": ReplayConfig, "logger": LoggerConfig}


@dataclasses.dataclass(frozen=True)
class Config:
    run: RunConfig
    replay: ReplayConfig
    logger: LoggerConfig
    env: Any
    agent: Any

    def to_dict(self) -> dict:
        return {name: to_plain(getattr(self, name)) for name in SECTIONS}

    def hash(self) -> str:
        return config_hash(self)


# ----------------------------------------------------------------------------------------- conversion


def to_plain(value):
    """Dataclass -> nested plain dict/list/scalars (YAML and JSON friendly)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def canonical_json(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: Config) -> str:
    """Stable 10-hex-digit hash of the resolved config (logger settings excluded, ADDED_FIELDS at their values
    of earlier runs too)."""
    return plain_config_hash(config.to_dict())


def plain_config_hash(data: Mapping) -> str:
    """`config_hash` of a plain config dict (a run's config.yaml). Raises TypeError or ValueError when its values
    are not plain data."""
    hashed = {k: v for k, v in comparable(data).items() if k not in UNHASHED_SECTIONS}
    return hashlib.sha256(canonical_json(hashed).encode()).hexdigest()[:10]


def comparable(data: Mapping) -> dict:
    """A plain config dict without the ADDED_FIELDS that hold the value earlier runs had (or are missing)."""
    out = {section: dict(values) if isinstance(values, Mapping) else values for section, values in data.items()}
    for dotted, earlier in ADDED_FIELDS.items():
        section, name = dotted.split(".")
        if isinstance(out.get(section), Mapping) and out[section].get(name, earlier) == earlier:
            out[section].pop(name, None)
    return out


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value, tp, key: str):
    """Coerce a YAML value or a command-line string to the annotated type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{key}: cannot read {value!r} as {_type_name(tp)}")
    if tp is Any:
        return value
    if origin is tuple or tp is tuple:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.strip("()[]").split(",")) if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        return tuple(coerce(v, inner, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected a bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an int, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an int, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{key}: expected an int, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a float, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{key}: is a section; set its fields as {key}.<field>")
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c.d": 2} -> {"a.b": 1, "c.d": 2}."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def replace_path(obj, path: list[str], value, full_key: str, valid_keys: list[str]):
    """Return a copy of dataclass `obj` with the field at `path` set to `value` (coerced)."""
    types_ = _field_types(type(obj))
    head = path[0]
    if head not in types_:
        close = difflib.get_close_matches(full_key, valid_keys, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {full_key!r}.{hint}")
    tp = types_[head]
    if len(path) == 1:
        if dataclasses.is_dataclass(tp):
            raise ConfigError(f"{full_key}: is a section; set its fields as {full_key}.<field>")
        return dataclasses.replace(obj, **{head: coerce(value, tp, full_key)})
    if not dataclasses.is_dataclass(tp):
        close = difflib.get_close_matches(full_key, valid_keys, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {full_key!r} ({'.'.join(path[:1])} is not a section).{hint}")
    inner = replace_path(getattr(obj, head), path[1:], value, full_key, valid_keys)
    return dataclasses.replace(obj, **{head: inner})


def route_key(key: str) -> tuple[str, list[str]]:
    """'run.steps' -> ('run', ['steps']); 'loss_scales.sparse' -> ('agent', ['loss_scales', 'sparse'])."""
    parts = key.split(".")
    if parts[0] in SECTIONS and len(parts) > 1:
        return parts[0], parts[1:]
    return "agent", parts


def valid_user_keys(config: Config) -> list[str]:
    keys = []
    for section in SECTIONS:
        for key in all_keys(type(getattr(config, section))):
            keys.append(key if section == "agent" else f"{section}.{key}")
    return keys


def apply(config: Config, updates: Mapping[str, Any], source: str = "") -> Config:
    """Apply nested or dotted updates to a Config. `source` (a preset or "command line") prefixes errors."""
    valid = valid_user_keys(config)
    for key, value in _flatten(updates).items():
        section, path = route_key(key)
        try:
            new_section = replace_path(getattr(config, section), path, value, key, valid)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}" if source else str(error)) from None
        config = dataclasses.replace(config, **{section: new_section})
    return config


def from_dict(cls, data: Mapping, prefix: str = ""):
    """Build dataclass `cls` strictly from a plain dict (e.g. a saved config.yaml)."""
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}")
    kwargs = {}
    for name, value in data.items():
        tp = types_[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, tp, prefix + name)
    return cls(**kwargs)


# -------------------------------------------------------------------------------------------- presets


def load_yaml(path) -> dict:
    with open(path) as file:
        data = yaml.safe_load(file) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of preset names to settings")
    return data


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """['--run.steps', '1e5', '--loss_scales.sparse=10'] -> {'run.steps': '1e5', 'loss_scales.sparse': '10'}."""
    overrides: dict[str, str] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r} (config overrides look like --key.sub VALUE)")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            index += 1
        else:
            if index + 1 >= len(argv) or argv[index + 1].startswith("--"):
                raise ConfigError(f"--{key}: missing a value")
            value = argv[index + 1]
            index += 2
        overrides[key] = value
    return overrides


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def diff(a: Mapping, b: Mapping) -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, "<missing>") != fb.get(k, "<missing>"))
