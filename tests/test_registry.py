import importlib.metadata
import types

import pytest

from bench import registry
from bench.api import AgentSpec, SuiteSpec


def test_registered_agents_and_suites_load():
    assert "random" in registry.agent_names() and "toy" in registry.suite_names()
    assert isinstance(registry.get_agent("random"), AgentSpec)
    assert isinstance(registry.get_suite("toy"), SuiteSpec)


def test_unknown_names_list_the_available_ones():
    with pytest.raises(registry.RegistryError, match=r"unknown agent 'randmo'\. Did you mean 'random'\?.*Available:.*random"):
        registry.get_agent("randmo")
    with pytest.raises(registry.RegistryError, match=r"unknown suite 'nope'.*Available:.*toy"):
        registry.get_suite("nope")


def test_unknown_task_lists_the_suite_tasks():
    toy = registry.get_suite("toy")
    with pytest.raises(KeyError, match=r"unknown task 'rech'.*'reach'.*Tasks: reach, keydoor, point"):
        toy.resolve_task("rech")
    assert toy.resolve_task("KeyDoor") == "keydoor"


def test_module_paths_load_unregistered_code():
    assert registry.get_agent("tests.helpers:TINY").name == "tiny"
    assert registry.get_suite("tests.helpers:CRASHING").name == "crashing"
    with pytest.raises(registry.RegistryError, match="has no attribute 'NOPE'"):
        registry.get_agent("tests.helpers:NOPE")
    with pytest.raises(registry.RegistryError, match="cannot import"):
        registry.get_agent("no_such_module:SPEC")
    with pytest.raises(registry.RegistryError, match="expected a AgentSpec"):
        registry.get_agent("tests.helpers:CRASHING")


def test_duplicate_names_name_both_sources(monkeypatch):
    def fake(group):
        dist = lambda name: types.SimpleNamespace(name=name)  # noqa: E731
        return [
            types.SimpleNamespace(name="dreamer", value="pkg_a.agent:SPEC", dist=dist("pkg-a")),
            types.SimpleNamespace(name="dreamer", value="pkg_b.agent:SPEC", dist=dist("pkg-b")),
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: fake(group))
    with pytest.raises(registry.RegistryError, match=r"'dreamer' is registered twice: by pkg_a\.agent:SPEC \(from pkg-a\) and by pkg_b\.agent:SPEC \(from pkg-b\)"):
        registry._entry_points(registry.AGENT_GROUP)


@pytest.mark.parametrize("agent", ["dreamerv3", "thick", "vsg", "svsg"])
def test_shared_quick_preset_reaches_every_dreamerv3_family_agent(agent):
    from bench.runner import resolve

    flags = {"run.train_ratio": "128", "optimizer.lr": "1e-3", "reward_head.bins": "255", "critic.bins": "255"}
    quick = resolve(agent, "toy", "reach", ("debug", "quick"), {})[3]
    spelled_out = resolve(agent, "toy", "reach", ("debug",), flags)[3]
    assert quick.hash() == spelled_out.hash()
    assert quick.run.train_ratio == 128 and quick.agent.optimizer.lr == 1e-3 and quick.agent.critic.bins == 255
