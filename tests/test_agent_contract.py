"""The agent contract, for every registered learning agent (registry agents with training streams), on a
discrete toy task (reach) and a continuous one (point; with the slow tests where the agent also acts on reach),
with the `debug` preset shrunk further:

* init gives a state, streams() names batch shapes, initial_carry(state, n) gives a carry;
* act resets the carry where `is_first`: acting from any carry equals acting from a fresh initial carry;
* update traces once over several calls with new batches and keys (one compiled update per stream);
* every loss term is logged: each field of `config.loss_scales` appears as a `loss/<name>` metric;
* a save/load round trip (`eqx.tree_serialise_leaves` to bytes) gives identical act and update outputs.

A new agent registered under `bench.agents` gets these checks without writing a test.
"""

from __future__ import annotations

import dataclasses
import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import config as config_lib
from bench import registry, spaces
from tasks import toy

TASKS = ("reach", "point")  # discrete and continuous actions
ACTION_KIND = {"reach": "discrete", "point": "continuous"}
TASK_SPECIFIC = {"bbs_scripted"}  # scripted policies that read one suite's private state; they do not learn
# Shrinks the debug models further where the agent has these keys (others are left alone).
SMALL = {"batch_size": 2, "batch_length": 4, "imagination.horizon": 3}


def build(name: str, task: str):
    spec = registry.get_agent(name)
    presets = ["debug"] if "debug" in registry.agent_presets(spec) else []
    config = registry.build_config(spec, toy.SUITE, presets, task=task)
    valid = set(config_lib.valid_user_keys(config))
    config = config_lib.apply(config, {k: v for k, v in SMALL.items() if k in valid})
    env = toy.make_env(task, config.env)
    return spec.make(config.agent, env.obs_space, env.act_space)


def learning_agents() -> list[str]:
    general = sorted(set(registry.agent_names()) - TASK_SPECIFIC)
    return [name for name in general if build(name, TASKS[0]).streams()]


def test_task_specific_agents_are_registered_and_do_not_learn():
    # Everything else must build on the toy tasks (learning_agents would fail to collect otherwise).
    assert TASK_SPECIFIC <= set(registry.agent_names())


def make_obs(agent, rng: np.random.Generator, first) -> dict:
    n = len(first)
    obs = {k: agent.obs_space[k].sample(rng, (n,)) for k in spaces.sensor_keys(agent.obs_space)}
    obs.update(reward=np.zeros(n, np.float32), is_first=np.asarray(first, bool), is_last=np.zeros(n, bool),
               is_terminal=np.zeros(n, bool))  # fmt: skip
    return obs


def make_batch(agent, stream, extras: dict, rng: np.random.Generator) -> dict:
    """Random (B, T) sequences shaped like the runner's batches: sensors, step keys, actions, `act` extras.

    A stream of another table than "main" gets what the runner writes there: the extras "<table>/<key>" as
    "<key>" (without "<table>/write"), with episode flags and rewards like the main table's."""
    b, t = stream.batch, stream.total_length
    others = {s.table for s in agent.streams().values()} - {"main"}
    if stream.table != "main":
        prefix = stream.table + "/"
        batch = {k[len(prefix):]: rng.uniform(size=(b, t, *v.shape[1:])).astype(v.dtype)
                 for k, v in extras.items() if k.startswith(prefix) and k != prefix + "write"}  # fmt: skip
        batch.update(_flags(batch, rng, b, t))
        return batch
    extras = {k: v for k, v in extras.items() if k.split("/", 1)[0] not in others}
    batch = {k: np.stack([agent.obs_space[k].sample(rng, (t,)) for _ in range(b)])
             for k in spaces.sensor_keys(agent.obs_space)}  # fmt: skip
    batch.update(_flags({"reward": 0, "is_first": 0, "is_last": 0, "is_terminal": 0}, rng, b, t))
    for key, space in agent.act_space.items():
        batch[key] = space.sample(rng, (b, t))
    for key, value in extras.items():
        batch[key] = rng.uniform(size=(b, t, *value.shape[1:])).astype(value.dtype)
    return batch


def _flags(batch: dict, rng: np.random.Generator, b: int, t: int) -> dict:
    """Rewards and episode flags for those of the step keys that `batch` has."""
    flags = {"reward": rng.normal(size=(b, t)).astype(np.float32), "is_first": rng.uniform(size=(b, t)) < 0.2}
    flags["is_last"] = np.roll(flags["is_first"], -1, axis=1)
    flags["is_terminal"] = flags["is_last"] & (rng.uniform(size=(b, t)) < 0.5)
    return {k: v for k, v in flags.items() if k in batch}


def copy(tree):
    """A state with its own buffers (the same arrays cannot be passed twice to a donating update)."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree)


def cases() -> list:
    """(agent, task) for every learning agent and task it can act in. The default run checks each agent on its
    first task (compiling every agent's updates twice took over 10 minutes of the 2-core CI budget); the other
    task runs with the slow tests."""
    found = []
    for name in learning_agents():
        tasks = [t for t in TASKS if ACTION_KIND[t] in registry.get_agent(name).action_kinds]
        found += [pytest.param((name, t), marks=[pytest.mark.slow] if i else []) for i, t in enumerate(tasks)]
    return found


@pytest.fixture(scope="module", ids="-".join, params=cases())
def setup(request):
    name, task = request.param
    agent = build(name, task)
    traces = {"update": 0}

    @eqx.filter_jit
    def act(state, carry, obs, key):
        return agent.act(state, carry, obs, key=key, mode="train")

    @eqx.filter_jit
    def update(state, stream, batch, key):
        traces["update"] += 1  # runs once per trace
        return agent.update(state, stream, batch, key=key)

    state = agent.init(key=jax.random.key(0))
    rng = np.random.default_rng(0)
    _, _, extras = act(state, agent.initial_carry(state, 2), make_obs(agent, rng, [True, True]), jax.random.key(1))
    return agent, state, act, update, traces, extras


def test_init_gives_state_streams_and_carry(setup):
    agent, state, *_ = setup
    assert jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))
    for stream in agent.streams().values():
        assert stream.batch >= 1 and stream.length >= 1
    carry = agent.initial_carry(state, 3)
    assert all(x.shape[0] == 3 for x in jax.tree.leaves(carry))


def test_act_resets_the_carry_on_first(setup):
    agent, state, act, *_ = setup
    rng = np.random.default_rng(1)
    carry = agent.initial_carry(state, 2)
    for step in range(3):  # a carry that has seen some steps
        carry, action, _ = act(state, carry, make_obs(agent, rng, [step == 0] * 2), jax.random.key(step))
    for key, space in agent.act_space.items():
        assert np.asarray(action[key]).shape == (2, *space.shape)
    first = make_obs(agent, rng, [True, True])
    from_carry = act(state, carry, first, jax.random.key(9))
    from_fresh = act(state, agent.initial_carry(state, 2), first, jax.random.key(9))
    for a, b in zip(jax.tree.leaves(from_carry), jax.tree.leaves(from_fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def test_update_traces_once_and_logs_every_loss_term(setup):
    agent, state, _, update, traces, extras = setup
    rng = np.random.default_rng(2)
    before = traces["update"]
    state = copy(state)
    for step in range(3):
        for name, stream in agent.streams().items():
            batch = make_batch(agent, stream, extras, rng)
            state, metrics, _ = update(state, name, batch, jax.random.key(step))
            values = {k: float(v) for k, v in metrics.items()}
            assert all(np.isfinite(v) for v in values.values()), values
    assert traces["update"] - before == len(agent.streams())
    scales = getattr(agent.config, "loss_scales", None)
    if scales is not None:
        logged = {k.removeprefix("loss/") for k in metrics if k.startswith("loss/")} - {"total"}
        assert logged == {f.name for f in dataclasses.fields(scales)}


def test_save_load_round_trip_gives_identical_outputs(setup):
    agent, state, act, update, _, extras = setup
    rng = np.random.default_rng(3)
    (name, stream), *_ = agent.streams().items()
    state, _, _ = update(copy(state), name, make_batch(agent, stream, extras, rng), jax.random.key(4))
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    restored = eqx.tree_deserialise_leaves(io.BytesIO(buffer.getvalue()), agent.init(key=jax.random.key(123)))
    obs = make_obs(agent, rng, [True, False])
    outs = [act(s, agent.initial_carry(s, 2), obs, jax.random.key(5)) for s in (state, restored)]
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    batch = make_batch(agent, stream, extras, rng)
    first = update(copy(state), name, batch, jax.random.key(6))
    second = update(restored, name, batch, jax.random.key(6))
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(a, b)
