"""Registry of agents and suites.

Installed code registers through entry points:

    [project.entry-points."bench.agents"]
    dreamerv3 = "agents.dreamerv3:SPEC"
    [project.entry-points."bench.suites"]
    atari100k = "tasks.atari:SUITE"

Code that is not installed is named by path: `--agent mypkg.myagent:SPEC`. A name registered twice is an
error naming both sources; an unknown name lists the registered ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

from bench import config as config_lib
from bench.api import AgentSpec, SuiteSpec

AGENT_GROUP = "bench.agents"
SUITE_GROUP = "bench.suites"


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def load_object(path: str):
    """Import 'package.module:NAME' and return the attribute."""
    if ":" not in path:
        raise RegistryError(f"{path!r} is not of the form 'package.module:NAME'")
    module_name, attribute = path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise RegistryError(f"cannot import {module_name!r} for {path!r}: {error}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise RegistryError(f"module {module_name!r} has no attribute {attribute!r}") from None


def _entry_points(group: str) -> dict[str, tuple[str, str]]:
    """name -> (value, source) for a group; duplicates across distributions are an error."""
    found: dict[str, tuple[str, str]] = {}
    for entry in importlib.metadata.entry_points(group=group):
        source = f"{entry.value} (from {entry.dist.name if entry.dist else 'unknown distribution'})"
        if entry.name in found and found[entry.name][0] != entry.value:
            raise RegistryError(
                f"{group} name {entry.name!r} is registered twice: by {found[entry.name][1]} and by {source}"
            )
        found[entry.name] = (entry.value, source)
    return found


@functools.cache
def _registered(group: str) -> dict[str, tuple[str, str]]:
    return _entry_points(group)


def agent_names() -> list[str]:
    return sorted(_registered(AGENT_GROUP))


def suite_names() -> list[str]:
    return sorted(_registered(SUITE_GROUP))


def _get(group: str, name: str, kind: str, expected: type):
    if ":" in name:
        spec = load_object(name)
    else:
        registered = _registered(group)
        if name not in registered:
            close = difflib.get_close_matches(name, list(registered), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(
                f"unknown {kind} {name!r}.{hint} Available: {', '.join(sorted(registered)) or 'none'}"
                f" (or give a path 'package.module:NAME')"
            )
        spec = load_object(registered[name][0])
    if not isinstance(spec, expected):
        raise RegistryError(f"{name!r} is a {type(spec).__name__}, expected a {expected.__name__}")
    return spec


def get_agent(name: str) -> AgentSpec:
    return _get(AGENT_GROUP, name, "agent", AgentSpec)


def get_suite(name: str) -> SuiteSpec:
    return _get(SUITE_GROUP, name, "suite", SuiteSpec)


# -------------------------------------------------------------------------------------------- presets


def _resolve_preset_file(ref: str) -> Path:
    """'package:relative/path.yaml' (package data) or a filesystem path."""
    if ":" in ref and not Path(ref).exists():
        package, relative = ref.split(":", 1)
        return Path(str(importlib.resources.files(package).joinpath(relative)))
    return Path(ref)


def agent_presets(spec: AgentSpec) -> dict[str, dict]:
    """All named presets of an agent. The files layer in order: a preset defined again in a later file extends
    the earlier definition, its top-level keys replacing the earlier ones (`dict.update`). So variants extend
    a shared table (THICK's `size12m` adds `highlevel.units` to the shared `size12m`; SVSG's replaces `rssm`)."""
    presets: dict[str, dict] = {}
    for ref in spec.presets:
        path = _resolve_preset_file(ref)
        for name, settings in config_lib.load_yaml(path).items():
            if not isinstance(settings, dict):
                raise config_lib.ConfigError(f"{path}: preset {name!r} must be a mapping of keys to values")
            presets[name] = {**presets.get(name, {}), **settings}
    return presets


def build_config(
    agent: AgentSpec,
    suite: SuiteSpec,
    configs: Sequence[str] = (),
    overrides: dict | None = None,
    task: str | None = None,
) -> config_lib.Config:
    """defaults < suite preset (and 'suite_task' preset) < --configs presets in order < dotted overrides."""
    config = config_lib.Config(
        run=config_lib.RunConfig(),
        replay=config_lib.ReplayConfig(),
        logger=config_lib.LoggerConfig(),
        env=suite.protocol_cls(),
        agent=agent.config_cls(),
    )
    presets = agent_presets(agent)
    automatic = [suite.name] + ([f"{suite.name}_{task}"] if task else [])
    for name in automatic:
        if name in presets:
            config = config_lib.apply(config, presets[name], source=f"preset {name!r}")
    for name in configs:
        if name not in presets:
            close = difflib.get_close_matches(name, list(presets), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise config_lib.ConfigError(
                f"unknown preset {name!r} for agent {agent.name!r}.{hint} Presets: {', '.join(sorted(presets)) or 'none'}"
            )
        config = config_lib.apply(config, presets[name], source=f"preset {name!r}")
    config = config_lib.apply(config, overrides or {}, source="command line")
    config_lib.check_ranges(config)  # before any run folder is written
    return config


def describe_spec(spec) -> str:
    return spec.description.strip().splitlines()[0] if getattr(spec, "description", "") else ""


def protocol_dict(suite: SuiteSpec, protocol) -> dict:
    """The protocol as recorded in manifests; protocol fields (e.g. env.eval_protocol) win over suite defaults."""
    defaults = {"eval_protocol": suite.eval_protocol, "eval_window": suite.eval_window, "normaliser": suite.normaliser}
    return defaults | dataclasses.asdict(protocol)
