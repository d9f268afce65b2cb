"""The agent contract, checked in seconds on a real task: init, act, update on every stream, report, save/load.

    from bench.contract import check_agent
    check_agent("my_agent")                      # toy reach; any registered name or 'package.module:SPEC'
    check_agent("my_agent", "gym", "CartPole-v1", configs=["debug"])

Raises `ContractError` naming the method and the problem. It calls the agent the way the runner does
(`eqx.filter_jit`, batches of (B, T, ...) with every observation, action and extra key) without starting a run.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from bench import registry
from bench.envs import stack
from bench.spaces import Space


class ContractError(AssertionError):
    pass


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _check_actions(act_space: dict[str, Space], action: dict, batch: int) -> None:
    _require(set(action) == set(act_space), f"act: action keys {sorted(action)} != {sorted(act_space)}")
    for key, space in act_space.items():
        values = np.asarray(action[key])
        _require(values.shape == (batch, *space.shape),
                 f"act: action[{key!r}] has shape {values.shape}, expected {(batch, *space.shape)}")  # fmt: skip
        for value in values:
            try:
                space.check(f"action[{key!r}]", value)
            except ValueError as error:
                raise ContractError(f"act: {error}") from None


def check_agent(agent: str, suite: str = "toy", task: str = "reach", *, configs: Sequence[str] = (),
                batch_envs: int = 2, seed: int = 0) -> dict:  # fmt: skip
    """Run the contract checks; returns the metrics of the first update of each stream."""
    agent_spec, suite_spec = registry.get_agent(agent), registry.get_suite(suite)
    task = suite_spec.resolve_task(task)
    config = registry.build_config(agent_spec, suite_spec, configs, {}, task)
    env = suite_spec.make_env(task, config.env, 0)
    try:
        obs_space, act_space = env.obs_space, env.act_space
        model = agent_spec.make(config.agent, obs_space, act_space)
        key = jax.random.PRNGKey(seed)
        state = model.init(key=jax.random.fold_in(key, 0))
        carry = model.initial_carry(state, batch_envs)
        obs = stack([env.reset(seed=i) for i in range(batch_envs)])
        act = eqx.filter_jit(model.act)
        for mode in ("train", "eval"):
            _, action, extras = act(state, carry, obs, key=jax.random.fold_in(key, 1), mode=mode)
            _check_actions(act_space, jax.device_get(action), batch_envs)
        carry, action, extras = act(state, carry, obs, key=jax.random.fold_in(key, 2), mode="train")
        clash = set(extras) & (set(obs_space) | set(act_space))
        _require(not clash, f"act: extras reuse observation/action keys {sorted(clash)}")
        streams = dict(model.streams())
        update = eqx.filter_jit(model.update)
        metrics_by_stream = {}
        rng = np.random.default_rng(seed)
        for name, stream in streams.items():
            shape = (stream.batch, stream.total_length)
            if stream.table == "main":
                batch = {k: space.sample(rng, shape) for k, space in {**obs_space, **act_space}.items()}
                batch["is_first"][:, 0] = True
                others = {spec.table for spec in streams.values()} - {"main"}
                stored = {k: v for k, v in jax.device_get(extras).items() if k.split("/", 1)[0] not in others}
            else:  # the runner writes "<table>/<key>" extras into that table as "<key>" (without "write")
                batch = {}
                prefix = stream.table + "/"
                stored = {k[len(prefix):]: v for k, v in jax.device_get(extras).items() if k.startswith(prefix)}
                _require("write" in stored, f"act: extras lack {prefix}write for the table of stream {name!r}")
                del stored["write"]
            for k, value in stored.items():
                batch[k] = np.broadcast_to(np.asarray(value)[:1, None], (*shape, *np.shape(value)[1:])).copy()
            new_state, metrics, updates = update(state, name, batch, key=jax.random.fold_in(key, 3))
            for metric, value in metrics.items():
                _require(np.ndim(value) == 0 and np.isfinite(value),
                         f"update({name!r}): metric {metric!r} is not a finite scalar: {value}")  # fmt: skip
            for k, value in updates.items():
                _require(k in batch and np.shape(value)[:2] == shape,
                         f"update({name!r}): replay update {k!r} must be a batch key shaped {shape}...")  # fmt: skip
            _require(jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state),
                     f"update({name!r}) changed the structure of the state")  # fmt: skip
            state = new_state
            metrics_by_stream[name] = {k: float(v) for k, v in metrics.items()}
        if streams:
            first = next(iter(streams.values()))
            shape = (first.batch, first.total_length)
            batch = {k: space.sample(rng, shape) for k, space in {**obs_space, **act_space}.items()}
            for k, value in jax.device_get(extras).items():
                batch[k] = np.broadcast_to(np.asarray(value)[:1, None], (*shape, *np.shape(value)[1:])).copy()
            _require(isinstance(model.report(state, batch, key=key), dict), "report must return a dict")
        # save/load: the runner serialises (state, carry) leaves and restores them into a fresh init
        buffer = io.BytesIO()
        eqx.tree_serialise_leaves(buffer, (state, carry))
        buffer.seek(0)
        like = (model.init(key=jax.random.fold_in(key, 9)), model.initial_carry(state, batch_envs))
        restored = eqx.tree_deserialise_leaves(buffer, like)
        same = jax.tree_util.tree_map(
            lambda a, b: bool(jnp.array_equal(a, b)), eqx.filter((state, carry), eqx.is_array),
            eqx.filter(restored, eqx.is_array),
        )
        _require(all(jax.tree_util.tree_leaves(same)), "save/load: restored state differs from the saved one")
        return metrics_by_stream
    finally:
        env.close()
