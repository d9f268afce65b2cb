"""Test doubles registered by path (`tests.helpers:NAME`): a tiny learning agent and a crashing suite.

`TINY` is a small JAX agent that exercises everything a world-model agent uses from the framework:
an explicit state with an optax optimizer, a recurrent carry, `extras` stored in replay and written back
by `update` (like DreamerV3's replay context), and a policy that depends on the learned parameters.
It learns a softmax policy by reward-weighted regression on replayed steps.
"""

from __future__ import annotations

import dataclasses
import os
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.api import AbstractAgent, AgentSpec, StreamSpec, SuiteSpec
from tasks import toy


def convolution_group_counts(lowered_text: str) -> set[int]:
    """The feature and batch group counts of every convolution in a lowered (StableHLO) program: {1} or
    empty when none is grouped (under `jax.vmap` a kernel per seed would make XLA group them: ~10x slower on
    CPU, see agents/common/conv.py `mapped_per_index`)."""
    return {int(n) for n in re.findall(r"(?:feature|batch)_group_count = (\d+)", lowered_text)}


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    lr: float = 3e-2
    batch: int = 4
    length: int = 8
    context: int = 1
    hidden: int = 8
    nan_after: int = -1  # make the loss NaN from this update on (tests the NaN guard); -1 = never
    nan_state_after: int = -1  # make the weights NaN (metrics stay finite) from this update on; -1 = never


class TinyState(eqx.Module):
    weights: jax.Array
    bias: jax.Array
    opt_state: optax.OptState
    updates: jax.Array
    shadow: jax.Array  # a float the loss never reads (`nan_state_after` poisons it: state NaN, metrics finite)


class TinyAgent(AbstractAgent):
    config: TinyConfig
    obs_space: dict
    act_space: dict

    @property
    def classes(self):
        return self.act_space["action"].num_classes

    def features(self, image):
        return image.reshape(*image.shape[:-3], -1).astype(jnp.float32) / 255.0

    def optimizer(self):
        return optax.adam(self.config.lr)

    def init(self, *, key):
        size = int(np.prod(self.obs_space["image"].shape))
        weights = 0.01 * jax.random.normal(key, (size, self.classes))
        bias = jnp.zeros(self.classes)
        opt_state = self.optimizer().init((weights, bias))
        return TinyState(weights, bias, opt_state, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32))

    def initial_carry(self, state, batch_size):
        return {"memory": jnp.zeros((batch_size, self.config.hidden))}

    def act(self, state, carry, obs, *, key, mode):
        memory = jnp.where(obs["is_first"][:, None], 0.0, carry["memory"])
        x = self.features(obs["image"])
        logits = x @ state.weights + state.bias
        action = jax.random.categorical(key, logits) if mode == "train" else jnp.argmax(logits, -1)
        memory = 0.9 * memory + 0.1 * jnp.tanh(x[:, : self.config.hidden])
        return {"memory": memory}, {"action": action.astype(jnp.int32)}, {"memory": memory}

    def update(self, state, stream: str, batch, *, key):
        ctx = self.config.context
        x = self.features(batch["image"][:, ctx:-1])
        actions = batch["action"][:, ctx:-1]
        rewards = batch["reward"][:, ctx + 1 :]  # reward that followed each action
        valid = 1.0 - batch["is_last"][:, ctx:-1].astype(jnp.float32)

        def loss_fn(params):
            weights, bias = params
            logp = jax.nn.log_softmax(x @ weights + bias)
            chosen = jnp.take_along_axis(logp, actions[..., None], -1)[..., 0]
            advantage = rewards - rewards.mean()
            loss = -(advantage * chosen * valid).mean()
            poisoned = (self.config.nan_after >= 0) & (state.updates >= self.config.nan_after)
            return jnp.where(poisoned, jnp.nan, loss)

        loss, grads = jax.value_and_grad(loss_fn)((state.weights, state.bias))
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction: float ** int32 step count
            updates, opt_state = self.optimizer().update(grads, state.opt_state)
        weights, bias = optax.apply_updates((state.weights, state.bias), updates)
        poison = (self.config.nan_state_after >= 0) & (state.updates >= self.config.nan_state_after)
        new_state = TinyState(weights, bias, opt_state, state.updates + 1, jnp.where(poison, jnp.nan, state.shadow))
        refreshed = batch["memory"] * 0.5 + 0.5 * jnp.tanh(jnp.mean(x)) * jnp.ones_like(batch["memory"])
        return new_state, {"loss": loss, "memory_norm": jnp.abs(batch["memory"][:, :ctx]).mean()}, {"memory": refreshed}

    def report(self, state, batch, *, key):
        return {"weight_norm": jnp.linalg.norm(state.weights), "frame": batch["image"][0, 0]}

    def streams(self):
        c = self.config
        return {"train": StreamSpec(c.batch, c.length, c.context)}


TINY = AgentSpec("tiny", TinyConfig, lambda config, obs, act: TinyAgent(config, dict(obs), dict(act)),
                 description="test agent")  # fmt: skip


# A suite whose env process dies (os._exit) in some episodes, deterministically by episode seed.
class CrashingEnv(toy.GridEnv):
    def reset(self, *, seed):
        self.crash_at = 5 if seed % 4 == 1 else -1
        return super().reset(seed=seed)

    def step(self, action):
        if self.steps == self.crash_at:
            os._exit(3)
        return super().step(action)


def make_crashing_env(task, protocol, worker_index=0):
    return CrashingEnv("reach", protocol)


CRASHING = SuiteSpec("crashing", ("reach",), toy.ToyProtocol, make_crashing_env, budget=400, eval_episodes=2)


class BadActionAgent(AbstractAgent):
    """Always answers action 7 in a 5-action space."""

    config: TinyConfig
    obs_space: dict
    act_space: dict

    def init(self, *, key):
        return {}

    def initial_carry(self, state, batch_size):
        return {}

    def act(self, state, carry, obs, *, key, mode):
        return carry, {"action": jnp.full(obs["is_first"].shape, 7, jnp.int32)}, {}

    def update(self, state, stream: str, batch, *, key):
        return state, {}, {}

    def report(self, state, batch, *, key):
        return {}

    def streams(self):
        return {}


BAD_ACTION = AgentSpec("bad_action", TinyConfig, lambda c, o, a: BadActionAgent(c, dict(o), dict(a)))


def random_policy_episodes(task: str, episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns and successes of the uniform random policy on a toy task: the bar of the learning tests.

    Episode seeds 10000.. and action generator seed 0, so the bar is the same on every run.
    """
    env = toy.make_env(task, toy.ToyProtocol())
    rng = np.random.default_rng(0)
    returns, successes = [], []
    for episode in range(episodes):
        obs, total = env.reset(seed=10_000 + episode), 0.0
        while not obs["is_last"]:
            obs = env.step({k: space.sample(rng) for k, space in env.act_space.items()})
            total += float(obs["reward"])
        returns.append(total)
        successes.append(env.episode_stats().get("success", np.nan))  # NaN: the task has no success
    return np.asarray(returns), np.asarray(successes, dtype=float)


# Two training streams with different batch, length, context, ratio, start and replay table.
@dataclasses.dataclass(frozen=True)
class TwoStreamConfig:
    fast: tuple[int, int, float] = (2, 4, 16.0)  # batch, length, ratio
    slow: tuple[int, int, float] = (3, 6, 9.0)
    slow_context: int = 1
    slow_start: int = 300  # agent steps before the slow stream trains
    pair_every: int = 2  # the "pairs" table gets a row every this many steps of an episode
    compute_dtype: str = "float32"  # read by `bench perf agent` only (which matmul peak it compares with)


class TwoStreamState(eqx.Module):
    sums: dict  # per stream: running sum of the batch values it trained on (depends on every sampled batch)
    updates: dict


class TwoStreamAgent(AbstractAgent):
    """Stream "fast" trains on table "main"; stream "slow" on table "pairs", written from act extras."""

    config: TwoStreamConfig
    obs_space: dict
    act_space: dict

    def init(self, *, key):
        zero = lambda: jnp.zeros((), jnp.float32)  # noqa: E731
        return TwoStreamState({"fast": zero(), "slow": zero()},
                              {"fast": jnp.zeros((), jnp.int32), "slow": jnp.zeros((), jnp.int32)})  # fmt: skip

    def initial_carry(self, state, batch_size):
        return {"t": jnp.zeros((batch_size,), jnp.int32)}

    def act(self, state, carry, obs, *, key, mode):
        t = jnp.where(obs["is_first"], 0, carry["t"] + 1)
        n = self.act_space["action"].num_classes
        action = jax.random.randint(key, t.shape, 0, n, jnp.int32)
        extras = {
            "pairs/write": (t % self.config.pair_every) == 0,
            "pairs/t": t,
            "pairs/reward": obs["reward"].astype(jnp.float32),
            "pairs/is_first": obs["is_first"],
            "trained_sum": jnp.broadcast_to(state.sums["fast"], t.shape),
        }
        return {"t": t}, {"action": action}, extras

    def update(self, state, stream, batch, *, key):
        c = self.config
        batch_size, length, _ = c.fast if stream == "fast" else c.slow
        context = 0 if stream == "fast" else c.slow_context
        leading = next(iter(batch.values())).shape[:2]
        if leading != (batch_size, context + length):
            raise ValueError(f"stream {stream}: batch shape {leading} != {(batch_size, context + length)}")
        if stream == "fast":
            value = batch["reward"].astype(jnp.float32).sum() + 0.001 * batch["action"].sum().astype(jnp.float32)
        else:
            value = batch["t"].astype(jnp.float32).sum() + batch["reward"].astype(jnp.float32).sum()
        sums = {**state.sums, stream: state.sums[stream] + value + jax.random.uniform(key)}
        updates = {**state.updates, stream: state.updates[stream] + 1}
        metrics = {"value": value, "count": updates[stream]}
        if stream == "slow":  # the "pairs" table holds only the steps act marked for it
            metrics["odd_steps"] = (batch["t"] % c.pair_every != 0).sum().astype(jnp.float32)
        return TwoStreamState(sums, updates), metrics, {}

    def report(self, state, batch, *, key):
        return {"fast_sum": state.sums["fast"]}

    def streams(self):
        c = self.config
        return {
            "fast": StreamSpec(c.fast[0], c.fast[1], ratio=c.fast[2]),
            "slow": StreamSpec(c.slow[0], c.slow[1], context=c.slow_context, ratio=c.slow[2], start=c.slow_start,
                               table="pairs", online=False, sampler="uniform"),
        }


TWO_STREAMS = AgentSpec("two_streams", TwoStreamConfig,
                        lambda config, obs, act: TwoStreamAgent(config, dict(obs), dict(act)),
                        description="test agent with two training streams and two replay tables")  # fmt: skip

# TWO_STREAMS with presets named like model sizes: scripts/gpu_check.sh's dry-mode test runs it at "debug"
SIZED_TWO_STREAMS = dataclasses.replace(TWO_STREAMS, presets=("tests:fixtures/sizes.yaml",))
