"""Hieros (Mattes, Schlosser & Herbrich, ICML 2024) in Equinox: a hierarchy of S5 world models with subgoals.

Facts: /work/shared/reference/hieros_s5.md. `config.max_hierarchy` levels (static; 1 = a flat S5WM agent).
Level i acts every 4^i env steps, has its own S5WM, replay table ("main" for level 0, "level{i}" above) and
training stream ("level{i}", trained every 4^i level-0 updates). The algorithm, top to bottom:

`act` (every env step; every level is computed and masked to its own clock, so shapes stay static):
  1. The step counter since the episode start decides which levels are due: level i where counter % 4^i == 0
     (every level at an episode start).
  2. Bottom-up: level 0 filters the frame with the S5WM's recurrent step. Level i keeps the last 4 features
     [z, deter] of level i-1 (pushed whenever level i-1 is due) and, when due, filters their concatenation.
  3. Top-down: a due level samples its action from its actor on [features, goal]: an env action at level 0,
     a subgoal code (8 one-hot categoricals of 8 classes) above. A level's goal is the code its upper level
     chose last (zeros at the top).
  4. Replay: "main" gets level 0's goal as an extra; table "level{i}" gets level i's observation, action,
     goal, window-averaged reward and episode flags where level i is due or the episode ends.

`update(stream "level{i}")` (see hierarchy.level_losses):
  1. Filter the replayed level-i sequences with the S5WM's parallel scan from a zero state.
  2. World-model terms (DreamerV3's): reconstruction, reward, continue, KL dyn/rep with free nats.
  3. Imagine 16 steps with the recurrent step from every posterior state, the replayed goal held fixed.
  4. Rewards: extrinsic (reward head), subgoal (max-cosine to the decoded goal; all but the top level),
     novelty (goal-autoencoder error; above level 0). One critic and normaliser each; the REINFORCE
     advantage is their weighted sum (1.0, 0.3, 0.1).
  5. The goal autoencoder learns the imagined states. One Adam step per optimiser group (world model and
     goal autoencoder; actor and critics), then the slow critics follow by EMA.

Batch shards (`run.batch_shards`, agents/common/shards.py): the S5WM's filtering, its imagined steps and the
goal autoencoder draw with a key per row (`shards.split`, the rows' code under `shards.per_row`), the actor's
samples are batch draws, the return percentiles gather the whole batch, and the gradient and metrics are the
parts' means; tests/test_batch_shards_streams.py compares the two forms of an update of levels 0 and 1.

`report`: every level's world-model terms, level 0's open-loop video, the higher levels' open-loop
predictions of their observations, and the subgoal codes decoded to images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray

from agents.common import distributions as dists
from agents.common import optim, shards
from agents.common.actions import ActionLayout
from agents.common.behaviour import policy_mode, policy_sample
from agents.common.observations import split_keys
from agents.common.returns import PercentileNormalizer, ema_update
from agents.common.optim import warmup_schedule
from agents.hieros import hierarchy as hi
from agents.hieros.config import HierosConfig
from agents.hieros.s5 import ssm_parameter_mask
from bench.api import AbstractAgent, ImaginationCase, StreamSpec
from bench.spaces import Space

MAIN_TABLE = "main"
GOAL_KEY = "goal"  # the extra of table "main": level 0's goal code at each step
LEVEL_KEYS = ("obs", "action", "goal", "reward", "is_first", "is_last", "is_terminal")  # tables "level{i}"


def stream_name(level: int) -> str:
    return f"level{level}"


def table_name(level: int) -> str:
    return MAIN_TABLE if level == 0 else f"level{level}"


class LevelState(eqx.Module):
    nets: hi.LevelNets
    slow: dict  # EMA copies of the critics by reward type; not optimised
    opt_state: tuple
    retnorms: dict[str, PercentileNormalizer]
    updates: Int[Array, ""]


class HierosState(eqx.Module):
    levels: tuple[LevelState, ...]


class Hieros(AbstractAgent):
    config: HierosConfig
    obs_space: Mapping[str, Space]
    act_space: Mapping[str, Space]

    # -------------------------------------------------------------------------------------- helpers

    @property
    def levels(self) -> int:
        return self.config.max_hierarchy

    @property
    def layout(self) -> ActionLayout:
        return ActionLayout.from_spaces(self.act_space)

    def _optimizers(self) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
        """(world model + goal autoencoder, actor + critics): clipped Adam(W) with upstream's settings. With
        `optimizer.ssm_lr` > 0 the S5 layers' Lambda, B and log_step get that rate and no weight decay (the
        S5 reference's optimiser); at 0 they train with the rest of the model group, as upstream Hieros."""
        o = self.config.optimizer

        def adam(lr, eps, weight_decay=o.weight_decay):
            return optax.adamw(warmup_schedule(lr, o.warmup), eps=eps, weight_decay=weight_decay)

        model = adam(o.model_lr, o.model_eps)
        if o.ssm_lr > 0:
            labels = lambda params: jax.tree.map(lambda ssm: "ssm" if ssm else "rest", ssm_parameter_mask(params))
            model = optax.multi_transform({"rest": model, "ssm": adam(o.ssm_lr, o.model_eps, 0.0)}, labels)
        behaviour = adam(o.ac_lr, o.ac_eps)
        return (optax.chain(optax.clip_by_global_norm(o.model_clip), model),
                optax.chain(optax.clip_by_global_norm(o.ac_clip), behaviour))  # fmt: skip

    @staticmethod
    def _groups(nets: hi.LevelNets) -> tuple[dict, dict]:
        """The trainable arrays of the two optimiser groups."""
        params = eqx.filter(nets, eqx.is_inexact_array)
        model = {name: getattr(params, name) for name in hi.MODEL_GROUP}
        return model, {"actor": params.actor, "critics": params.critics}

    def _sensors(self, obs: Mapping[str, Array]) -> dict[str, Array]:
        images, vectors = split_keys(self.obs_space)
        missing = [k for k in images + vectors if k not in obs]
        if missing:
            raise ValueError(f"observation is missing the sensor keys {missing} (has {sorted(obs)})")
        return {k: obs[k] for k in images + vectors}

    def _code_size(self) -> int:
        return self.config.goal.stoch * self.config.goal.classes

    # ----------------------------------------------------------------------------------------- API

    def init(self, *, key: PRNGKeyArray) -> HierosState:
        levels = []
        for level, level_key in enumerate(jax.random.split(key, self.levels)):
            nets = hi.build_level(self.config, level, self.levels, self.obs_space, self.act_space, key=level_key)
            model, behaviour = self._groups(nets)
            model_opt, behaviour_opt = self._optimizers()
            copy = lambda m: jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, m)
            r = self.config.retnorm
            levels.append(LevelState(
                nets=nets,
                slow={name: copy(critic) for name, critic in nets.critics.items()},
                opt_state=(model_opt.init(model), behaviour_opt.init(behaviour)),
                retnorms={name: PercentileNormalizer(r.rate, r.limit, r.percentile_low, r.percentile_high)
                          for name in nets.critics},
                updates=jnp.zeros((), jnp.int32),
            ))  # fmt: skip
        return HierosState(tuple(levels))

    def initial_carry(self, state: HierosState, batch_size: int) -> dict:
        features, code = hi.feature_size(self.config), self._code_size()
        carry = {"counter": jnp.zeros((batch_size,), jnp.int32), "levels": []}
        for level, level_state in enumerate(state.levels):
            _, layout = hi.level_spaces(self.config, level, self.obs_space, self.act_space)
            world = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch_size, *x.shape)), level_state.nets.world.initial())
            entry = {
                "world": world,
                "action": jnp.zeros((batch_size, layout.size), jnp.float32),
                "feature": jnp.zeros((batch_size, features), jnp.float32),
                "entropy": jnp.zeros((batch_size,), jnp.float32),  # of the posterior (upstream starts at 0)
                "goal": jnp.zeros((batch_size, code), jnp.float32),
                "reward_sum": jnp.zeros((batch_size,), jnp.float32),
                "reward_count": jnp.zeros((batch_size,), jnp.float32),
            }
            if level > 0:
                entry["history"] = jnp.zeros((batch_size, self.config.period, features), jnp.float32)
            carry["levels"].append(entry)
        carry["levels"] = tuple(carry["levels"])
        return carry

    def act(self, state: HierosState, carry: dict, obs: Mapping[str, Array], *, key: PRNGKeyArray,
            mode: str) -> tuple[dict, dict, dict]:  # fmt: skip
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        period = self.config.period
        first = jnp.asarray(obs["is_first"], bool)
        last = jnp.asarray(obs["is_last"], bool)
        reward = jnp.asarray(obs["reward"], jnp.float32)
        keys = jax.random.split(key, 2 * self.levels)

        # 1. Clocks: level i is due every period^i steps of the episode.
        counter = jnp.where(first, 0, carry["counter"] + 1)
        due = [counter % (period**level) == 0 for level in range(self.levels)]
        select = lambda mask, new, old: jax.tree.map(
            lambda n, o: jnp.where(mask.reshape(-1, *([1] * (n.ndim - 1))), n, o), new, old
        )

        # 2. Bottom-up: every due level filters its observation.
        entries = [dict(entry) for entry in carry["levels"]]
        level_obs = []
        for level, (level_state, entry) in enumerate(zip(state.levels, entries)):
            entry["reward_sum"] = jnp.where(first, 0.0, entry["reward_sum"]) + reward
            entry["reward_count"] = jnp.where(first, 0.0, entry["reward_count"]) + 1.0
            if level == 0:
                sensors = self._sensors(obs)
            else:
                below = entries[level - 1]
                history = jnp.where(first[:, None, None], 0.0, entry["history"])
                pushed = jnp.concatenate([history[:, 1:], below["feature"][:, None]], 1)
                entry["history"] = jnp.where(due[level - 1][:, None, None], pushed, history)
                sensors = {hi.LEVEL_OBS: entry["history"].reshape(first.shape[0], -1)}
                level_obs.append(sensors[hi.LEVEL_OBS])
            world, feature, entropy = hi.observe_step(level_state.nets, entry["world"], sensors, entry["action"],
                                                      first, key=keys[level])  # fmt: skip
            entry["world"] = select(due[level], world, entry["world"])
            entry["feature"] = select(due[level], feature, entry["feature"])
            entry["entropy"] = select(due[level], entropy, entry["entropy"])

        # 3. Top-down: a due level acts on [features, goal]; its code becomes the goal of the level below.
        for level in reversed(range(self.levels)):
            nets = state.levels[level].nets
            entry, actor = entries[level], nets.actor
            if level < self.levels - 1:
                upper = entries[level + 1]
                entry["goal"] = select(due[level + 1], upper["action"], jnp.where(first[:, None], 0.0, entry["goal"]))
            policy = jax.vmap(actor)(hi.policy_input(self.config, nets, entry["feature"], entry["entropy"], entry["goal"]))
            if mode == "eval" and self.config.actor.eval_greedy:
                action = policy_mode(policy, actor.layout)
            else:
                action = policy_sample(policy, actor.layout, keys[self.levels + level])
            entry["action"] = select(due[level], action, entry["action"])

        # 4. Replay rows: level 0's goal in "main"; each higher level's step where it is due or the episode ends.
        extras = {GOAL_KEY: entries[0]["goal"]}
        for level in range(1, self.levels):
            entry, write = entries[level], due[level] | last
            prefix = table_name(level) + "/"
            row = {
                "obs": level_obs[level - 1], "action": entry["action"], "goal": entry["goal"],
                "reward": entry["reward_sum"] / jnp.maximum(entry["reward_count"], 1.0),
                "is_first": first, "is_last": last, "is_terminal": jnp.asarray(obs["is_terminal"], bool),
                "write": write,
            }  # fmt: skip
            extras.update({prefix + k: v for k, v in row.items()})
            entry["reward_sum"] = jnp.where(write, 0.0, entry["reward_sum"])
            entry["reward_count"] = jnp.where(write, 0.0, entry["reward_count"])
        new_carry = {"counter": counter, "levels": tuple(entries)}
        return new_carry, self.layout.to_env(entries[0]["action"]), extras

    def update(self, state: HierosState, stream: str, batch: Mapping[str, Array], *, key: PRNGKeyArray):
        streams = self.streams()
        if stream not in streams:
            raise ValueError(f"unknown stream {stream!r}; this agent trains on {sorted(streams)}")
        level = list(streams).index(stream)
        level_state = state.levels[level]
        data = self._level_data(level, batch)
        params, static = eqx.partition(level_state.nets, eqx.is_inexact_array)

        def loss_fn(params):
            nets = eqx.combine(params, static)
            losses, retnorms, metrics, _ = hi.level_losses(
                self.config, level, self.levels, nets, level_state.slow, level_state.retnorms, data, key=key
            )
            total, weighted = self._total(losses)
            return total, (retnorms, metrics, weighted)

        (total, (retnorms, metrics, weighted)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        # Under batch shards each part took the loss over its rows: the whole batch's gradient, loss and metrics
        # are the parts' means (agents/common/shards.py); the return percentiles gathered the whole batch.
        grads, total, metrics, weighted = shards.mean((grads, total, metrics, weighted))
        model_opt, behaviour_opt = self._optimizers()
        model_grads, behaviour_grads = self._groups(grads)
        model_params, behaviour_params = self._groups(params)
        # optax's schedules mix Python floats with int32 step counts (standard promotion).
        with jax.numpy_dtype_promotion("standard"):
            model_updates, model_state = model_opt.update(model_grads, level_state.opt_state[0], model_params)
            behaviour_updates, behaviour_state = behaviour_opt.update(
                behaviour_grads, level_state.opt_state[1], behaviour_params
            )
        updates = {**model_updates, **behaviour_updates}
        names = tuple(updates)
        params = eqx.tree_at(
            lambda p: tuple(getattr(p, name) for name in names), params,
            tuple(optax.apply_updates(getattr(params, name), updates[name]) for name in names),
        )  # fmt: skip
        nets = eqx.combine(params, static)
        slow = {name: ema_update(level_state.slow[name], nets.critics[name], self.config.slow_rate)
                for name in level_state.slow}  # fmt: skip
        new_level = LevelState(nets, slow, (model_state, behaviour_state), retnorms, level_state.updates + 1)
        levels = list(state.levels)
        levels[level] = new_level
        metrics = {**metrics, **weighted}  # the runner logs them under the stream's name ("level1/...")
        metrics["loss/total"] = total
        metrics["opt/grad_norm"] = optax.global_norm(grads)
        metrics["opt/updates"] = new_level.updates.astype(jnp.float32)
        return HierosState(tuple(levels)), metrics, {}

    def report(self, state: HierosState, batch: Mapping[str, Array], *, key: PRNGKeyArray) -> dict:
        from agents.hieros.report import report

        return report(self, state, batch, key=key)

    def streams(self) -> dict[str, StreamSpec]:
        """One stream per level: level i samples its own table with ETBS and trains 4^-i as often as level 0."""
        c = self.config
        return {
            stream_name(level): StreamSpec(
                c.batch_size, c.batch_length, ratio_scale=1.0 / c.period**level, sampler="etbs",
                table=table_name(level),
            )
            for level in range(self.levels)
        }  # fmt: skip

    def imagination_benchmark(self, batches: Mapping[str, dict]) -> dict[str, ImaginationCase]:
        """`bench perf agent`'s imagination timing (bench.api.ImaginationCase), level 0 as its update runs it:

        * `level0/filter_and_imagine`: filter the batch with the parallel scan for the start states, then
          `horizon` recurrent S5WM steps with the goal-conditioned actor from every posterior state;
        * `filter/level0`: the filtering alone (subtract it for the imagination's own time).
        """
        stream = stream_name(0)
        batch = batches[stream]
        starts = batch["is_first"].size
        horizon = self.config.imagination.horizon

        def filter_only(state, batch, key):
            return hi.filter_sequences(state.levels[0].nets, self._level_data(0, batch), key=key)[0]

        def filter_and_imagine(state, batch, key):
            observe_key, imagine_key = jax.random.split(key)
            nets, data = state.levels[0].nets, self._level_data(0, batch)
            post, _ = hi.filter_sequences(nets, data, key=observe_key)
            start, deter, entropy, goal = hi.imagination_starts(post, data)
            return hi.imagine(self.config, nets, start, deter, entropy, goal, horizon, key=imagine_key)

        return {
            "level0/filter_and_imagine": ImaginationCase(filter_and_imagine, batch, starts * horizon),
            "filter/level0": ImaginationCase(filter_only, batch, starts),
        }

    # -------------------------------------------------------------------------------------- batches

    def _level_data(self, level: int, batch: Mapping[str, Array]) -> hi.LevelData:
        """A level's replayed batch: level 0 reads the env keys of "main", a higher level its own table."""
        code = self._code_size()
        if level == 0:
            sensors = self._sensors(batch)
            actions = self.layout.to_vector({k: batch[k] for k in self.act_space}, 2)
            goal = batch[GOAL_KEY] if GOAL_KEY in batch else jnp.zeros((*actions.shape[:2], code), jnp.float32)
        else:
            missing = [k for k in LEVEL_KEYS if k not in batch]
            if missing:
                raise ValueError(f"level {level} batch lacks the keys {missing} (has {sorted(batch)})")
            sensors = {hi.LEVEL_OBS: jnp.asarray(batch["obs"], jnp.float32)}
            actions = jnp.asarray(batch["action"], jnp.float32)
            goal = batch["goal"]
        actions = jnp.asarray(actions, jnp.float32)
        prev_actions = jnp.concatenate([jnp.zeros_like(actions[:, :1]), actions[:, :-1]], 1)
        return hi.LevelData(
            sensors=sensors, actions=actions, prev_actions=prev_actions, goal=jnp.asarray(goal, jnp.float32),
            reward=jnp.asarray(batch["reward"], jnp.float32), is_first=jnp.asarray(batch["is_first"], bool),
            is_terminal=jnp.asarray(batch["is_terminal"], bool), is_last=jnp.asarray(batch["is_last"], bool),
        )  # fmt: skip

    def _total(self, losses: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
        return optim.weighted_total(losses, self.config.loss_scales)


def make_agent(config: HierosConfig, obs_space: Mapping[str, Space], act_space: Mapping[str, Space]) -> Hieros:
    """The AgentSpec `make`."""
    agent = Hieros(config, dict(obs_space), dict(act_space))
    split_keys(agent.obs_space)  # fail early on observation spaces without sensors
    ActionLayout.from_spaces(agent.act_space)
    if config.s5wm.deter % config.decoder.blocks and split_keys(agent.obs_space)[0]:
        raise ValueError(f"s5wm.deter ({config.s5wm.deter}) must be a multiple of decoder.blocks ({config.decoder.blocks})")
    return agent
