"""Hieros' `report`: open-loop predictions of every level's world model and the decoded subgoals.

The report receives a batch of the first stream (level 0, table "main"). Level 0: its world-model terms and
an open-loop video (truth, prediction, error): `report_context` steps filtered with the parallel scan, the rest
imagined with the recurrent step under the replayed actions. Level i > 0: its observations are rebuilt from
the batch as non-overlapping windows of 4 consecutive posterior features of the level below (what the
acting loop feeds it, up to the alignment of the windows to episode starts) and the same open-loop test runs
on them under zero actions (the batch has no higher-level actions); its error is reported as a scalar
(`level{i}/openloop_mse`) since those observations are latent vectors, not images. Subgoals: the goal codes
of the batch decoded by level 0's goal autoencoder into a deterministic feature, which the image decoder
turns into a picture (the categorical part taken as the prior head's mode at that feature, as the learned
initial latent is built).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agents.common import distributions as dists
from agents.common.observations import split_keys
from agents.hieros import hierarchy as hi


def _open_loop(nets: hi.LevelNets, sensors, prev_actions, is_first, context: int, *, key):
    """Features and decoder outputs of B sequences: filtered for `context` steps, then imagined."""
    world = nets.world
    observe_key, imagine_key = jax.random.split(key)
    tokens = nets.encoder(sensors)
    batch, steps = is_first.shape
    initial = world.initial()
    carry, post, _ = jax.vmap(lambda t, a, f, k: world.observe(initial, t, a, f, key=k))(
        tokens[:, :context], prev_actions[:, :context], is_first[:, :context], jax.random.split(observe_key, batch)
    )

    def step(carry, inputs):
        action, step_key = inputs
        keys = jax.random.split(step_key, batch)
        carry, out = jax.vmap(lambda c, a, k: world.imagine_step(c, a, key=k))(carry, action, keys)
        return carry, (out["stoch"], out["deter"])

    actions = jnp.swapaxes(prev_actions[:, context:], 0, 1)
    _, (stochs, deters) = jax.lax.scan(step, carry, (actions, jax.random.split(imagine_key, steps - context)))
    stoch = jnp.concatenate([post["stoch"], jnp.swapaxes(stochs, 0, 1)], 1)
    deter = jnp.concatenate([post["deter"], jnp.swapaxes(deters, 0, 1)], 1)
    features = world.features(stoch, deter)
    return features, nets.decoder(features, deter, stoch.reshape(batch, steps, -1)), post


def _video(truth, prediction):
    error = (prediction - truth + 1.0) / 2.0
    video = jnp.concatenate([truth, prediction, error], 3)  # (rows, T, H, 3W, C)
    video = jnp.concatenate(list(video), 1)  # rows stacked vertically
    if video.shape[-1] == 1:
        video = jnp.repeat(video, 3, -1)
    return jnp.clip(video[..., :3] * 255.0, 0, 255).astype(jnp.uint8)


def report(agent, state, batch, *, key) -> dict:
    config, period = agent.config, agent.config.period
    out = {}
    keys = jax.random.split(key, 2 * agent.levels + 1)
    data = agent._level_data(0, batch)
    rows = min(4, data.is_first.shape[0])
    context = max(1, min(config.report_context, data.is_first.shape[1] - 1))
    level0 = state.levels[0]
    losses, _, metrics, post = hi.level_losses(
        config, 0, agent.levels, level0.nets, level0.slow, level0.retnorms, data, key=keys[0]
    )
    out.update({f"level0/loss/{k}": v.mean() for k, v in losses.items()})
    out.update({f"level0/{k}": v for k, v in metrics.items() if k.startswith("wm/")})

    # Level 0's open loop.
    take = lambda x: x[:rows]
    sensors = jax.tree.map(take, data.sensors)
    _, predictions, _ = _open_loop(level0.nets, sensors, take(data.prev_actions), take(data.is_first), context,
                                   key=keys[1])  # fmt: skip
    images, _ = split_keys(agent.obs_space)
    for name in images:
        truth = sensors[name].astype(jnp.float32) / 255.0
        out["level0/openloop_mse"] = jnp.square(predictions[name] - truth)[:, context:].sum((2, 3, 4)).mean()
        out["level0/openloop"] = _video(truth, predictions[name])
    for name in split_keys(agent.obs_space)[1]:
        target = dists.symlog(sensors[name].reshape(*sensors[name].shape[:2], -1).astype(jnp.float32))
        out[f"level0/openloop_mse_{name}"] = jnp.square(predictions[name] - target)[:, context:].sum(-1).mean()

    # Higher levels: rebuild their observations from the level below, then the same open-loop test.
    features = level0.nets.world.features(post["stoch"], post["deter"])
    is_first = data.is_first
    for level in range(1, agent.levels):
        steps = features.shape[1] // period
        if steps < 2:
            break
        window = features[:, : steps * period].reshape(features.shape[0], steps, period * features.shape[-1])
        is_first = is_first[:, : steps * period : period]
        nets = state.levels[level].nets
        # the level's actions are not in this batch: its open loop runs under zero actions
        prev_actions = jnp.zeros((features.shape[0], steps, nets.actor.layout.size), jnp.float32)
        level_context = max(1, min(context // period**level, steps - 1))
        _, predictions, _ = _open_loop(
            nets, {hi.LEVEL_OBS: window}, prev_actions, is_first, level_context, key=keys[1 + level]
        )
        target = dists.symlog(window)
        error = jnp.square(predictions[hi.LEVEL_OBS] - target)[:, level_context:].sum(-1).mean()
        out[f"level{level}/openloop_mse"] = error
        # the full posterior sequence builds the next level's observations
        world, initial = nets.world, nets.world.initial()
        tokens = nets.encoder({hi.LEVEL_OBS: window})
        _, level_post, _ = jax.vmap(lambda t, a, f, k: world.observe(initial, t, a, f, key=k))(
            tokens, prev_actions, is_first, jax.random.split(keys[agent.levels + level], window.shape[0])
        )
        features = world.features(level_post["stoch"], level_post["deter"])

    # Subgoals of level 0 decoded to images.
    if images and agent.levels > 1:
        world, goal_ae = level0.nets.world, level0.nets.goal
        codes = data.goal[:rows, ::period].reshape(-1, data.goal.shape[-1])
        deter = jax.vmap(goal_ae.decode)(codes)
        log_probs = jax.vmap(world._prior_head)(deter)
        stoch = jax.nn.one_hot(jnp.argmax(log_probs, -1), world.classes, dtype=jnp.float32)
        decoded = level0.nets.decoder(world.features(stoch, deter), deter, stoch.reshape(stoch.shape[0], -1))
        picture = decoded[images[0]].reshape(rows, -1, *decoded[images[0]].shape[1:])  # (rows, n, H, W, C)
        r, n, h, w, c = picture.shape
        picture = picture.transpose(0, 2, 1, 3, 4).reshape(r * h, n * w, c)  # one row of subgoals per sequence
        if picture.shape[-1] == 1:
            picture = jnp.repeat(picture, 3, -1)
        out["level0/subgoals"] = jnp.clip(picture[..., :3] * 255.0, 0, 255).astype(jnp.uint8)
    return out
