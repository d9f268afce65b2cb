"""High-level training targets: where each segment ends and what happened there.

A segment boundary is a step `tau` where the context changed (any binary gate open) or the episode
terminated. For every input step t' the high-level model is trained to predict, at the first boundary
tau > t' inside the same episode and the same replayed sequence:

* `state`:   the posterior of z_{tau-1}, the state just BEFORE the change,
* `action`:  a_{tau-1}, the action that caused it (in our batches `action[t]` is the action taken at
             observation t, so this is `action[tau - 1]`),
* `context`: c_tau, the context after the change (input of the high-level action posterior),
* `time`:    delta = tau - 1 - t', the steps from t' to the state before the change,
* `reward`:  sum_{k=t'+1}^{tau-1} gamma^{k-t'-1} r_k, the discounted reward collected on the way.

Reward convention: `reward[k]` arrives with observation k, and DreamerV3's return from step t starts at
r_{t+1}. So the high-level return from t' is `reward + gamma^delta (r_tau + gamma V(s_tau))` with r_tau
predicted by the coarse reward head at the boundary (TF2 THICK, built on DreamerV2's convention, sums
r_{t'}..r_{tau-1} instead; the shift is deliberate).

Inputs with no boundary later in the sequence, or whose episode ends (a later `is_first`) before one, are
masked out. Everything has fixed shapes and is computed by one reverse `lax.scan`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


class SegmentTargets(NamedTuple):
    state: Array  # (B, T, ...) posterior statistics of z_{tau-1} (whatever was passed as `states`)
    action: Array  # (B, T, ...) a_{tau-1}
    context: Array  # (B, T, C) c_tau
    time: Float[Array, "B T"]  # tau - 1 - t'
    reward: Float[Array, "B T"]  # discounted reward from t'+1 to tau-1
    mask: Float[Array, "B T"]  # 1.0 where a boundary follows inside the episode and the sequence


def segment_boundaries(changed: Float[Array, "B T"], is_terminal: Bool[Array, "B T"]) -> Float[Array, "B T"]:
    """Boundary indicator: context changed or the episode terminated at that step."""
    return jnp.maximum(changed.astype(jnp.float32), is_terminal.astype(jnp.float32))


def segment_targets(
    *,
    states: Array,
    actions: Array,
    contexts: Float[Array, "B T C"],
    rewards: Float[Array, "B T"],
    boundaries: Float[Array, "B T"],
    is_first: Bool[Array, "B T"],
    discount: float,
) -> SegmentTargets:
    """Targets at the next segment boundary for every step of (B, T) sequences (see the module docstring)."""
    batch, length = boundaries.shape
    for name, value in (
        ("states", states),
        ("actions", actions),
        ("contexts", contexts),
        ("rewards", rewards),
    ):
        if value.shape[:2] != (batch, length):
            raise ValueError(
                f"segment_targets: {name} has shape {value.shape}, expected ({batch}, {length}, ...)"
            )
    if is_first.shape != (batch, length):
        raise ValueError(f"segment_targets: is_first has shape {is_first.shape}, expected {(batch, length)}")

    def shift_left(x, fill):
        """x[:, t+1] at position t; `fill` past the end."""
        pad = jnp.full((batch, 1) + x.shape[2:], fill, x.dtype)
        return jnp.concatenate([x[:, 1:], pad], 1)

    # Everything the scan needs at input step t concerns step t+1 (the candidate boundary) or t itself.
    next_boundary = shift_left(boundaries.astype(jnp.float32), 0.0)
    next_first = shift_left(is_first.astype(jnp.float32), 1.0)  # the sequence end cuts like an episode end
    next_reward = shift_left(rewards.astype(jnp.float32), 0.0)
    next_context = shift_left(contexts, 0.0)

    def step(carry, inputs):
        """carry: the targets seen from step t+1; returns those seen from step t."""
        boundary, first, reward, context_after, state_now, action_now = inputs
        later = carry  # boundary after t+1, seen from t+1
        here = boundary * (1.0 - first)  # the context changes at t+1 inside this episode
        cut = first  # t+1 starts a new episode (or lies past the sequence): no target
        valid = jnp.where(here > 0, 1.0, jnp.where(cut > 0, 0.0, later.mask))

        def pick(now, carried):
            mask = (here > 0).reshape(here.shape + (1,) * (now.ndim - 1))
            return jnp.where(mask, now, carried)

        new = SegmentTargets(
            state=pick(state_now, later.state),
            action=pick(action_now, later.action),
            context=pick(context_after, later.context),
            time=jnp.where(here > 0, 0.0, later.time + 1.0),
            reward=jnp.where(here > 0, 0.0, reward + discount * later.reward),
            mask=valid,
        )
        new = new._replace(
            time=new.time * valid,
            reward=new.reward * valid,  # masked entries are kept at exactly zero
        )
        return new, new

    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    inputs = jax.tree.map(time_major, (next_boundary, next_first, next_reward, next_context, states, actions))
    empty = SegmentTargets(
        state=jnp.zeros_like(states[:, 0]),
        action=jnp.zeros_like(actions[:, 0]),
        context=jnp.zeros_like(contexts[:, 0]),
        time=jnp.zeros((batch,), jnp.float32),
        reward=jnp.zeros((batch,), jnp.float32),
        mask=jnp.zeros((batch,), jnp.float32),
    )
    _, targets = jax.lax.scan(step, empty, inputs, reverse=True)
    return jax.tree.map(time_major, targets)
