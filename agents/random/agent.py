"""Uniform random actions through the full agent API (state, carry, act, update, report, streams)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from bench.api import AbstractAgent, AgentSpec
from bench.spaces import Space


@dataclasses.dataclass(frozen=True)
class RandomConfig:
    pass


class RandomAgent(AbstractAgent):
    config: RandomConfig
    obs_space: Mapping[str, Space]
    act_space: Mapping[str, Space]

    def init(self, *, key):
        return {"policy_steps": jnp.zeros((), jnp.int32)}

    def initial_carry(self, state, batch_size: int):
        return {}

    def act(self, state, carry, obs, *, key, mode: str):
        batch = obs["is_first"].shape[0]
        keys = jax.random.split(key, len(self.act_space))
        action = {}
        for subkey, (name, space) in zip(keys, sorted(self.act_space.items())):
            shape = (batch, *space.shape)
            if space.is_discrete:
                action[name] = jax.random.randint(subkey, shape, 0, space.num_classes, jnp.int32)
            else:
                low = -1.0 if space.low is None else space.low
                high = 1.0 if space.high is None else space.high
                action[name] = jax.random.uniform(subkey, shape, jnp.float32, low, high)
        return carry, action, {}

    def update(self, state, stream: str, batch, *, key):
        return state, {}, {}

    def report(self, state, batch, *, key):
        return {}

    def streams(self):
        return {}


def make(config: RandomConfig, obs_space, act_space) -> RandomAgent:
    return RandomAgent(config, dict(obs_space), dict(act_space))


SPEC = AgentSpec(
    name="random",
    config_cls=RandomConfig,
    make=make,
    description="Uniform random actions; no learning.",
)
