"""TSSM against the reference (/work/shared/reference/transformer_wm.md, TSSM section), one test per fact that
a one-line bug could break while tests/test_tssm.py stays green. Each test is chosen to fail on a specific bug
that scripts/mutations/tssm.py puts in (scripts/mutation_check.py --agent tssm):

* reward-symlog: the observed reward enters the model (reward token, reward target) as symlog r.
* tokrew-scale: the reward token's loss is the unit-variance Gaussian NLL 0.5 (r_hat - sg(r))^2.
* reward-reset, reward-unshifted: the reward r_t enters the model in the next step's chunk, and an episode's
  first chunk carries no reward or action of the previous episode.

Expected values are computed here in float64 numpy from those formulas, or are invariances the formulas imply
(outputs that must not move when an input they may not see changes).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from agents.tssm.dynamics import CACHE_KEYS, TSSM
from tests.numpy_reference import symlog

ACTIONS, TOKENS = 2, 6


def small_tssm() -> TSSM:
    return TSSM(TOKENS, ACTIONS, embed=8, layers=2, heads=2, context=4, hidden=8, stoch=2, classes=3,
                key=jax.random.key(1))  # fmt: skip


@eqx.filter_jit
def observe(dyn, latent, tokens, prev_actions, is_first, key):
    return dyn.observe(latent, tokens, prev_actions, is_first, key=key)


@eqx.filter_jit
def sequence(dyn, cache, prev_actions, prev_reward, stoch, is_first):
    return dyn.sequence(cache, prev_actions, prev_reward, stoch, is_first)


def test_observed_reward_enters_the_model_as_symlog():
    dyn = small_tssm()
    rng = np.random.default_rng(0)
    raw = np.array([[-30.0, -1.0, 0.0, 0.5, 7.0, 100.0]])
    batch, steps = raw.shape
    tokens = np.concatenate([rng.normal(size=(batch, steps, TOKENS)), raw[..., None]], -1)
    prev_actions = jnp.asarray(rng.uniform(-1, 1, size=(batch, steps, ACTIONS)), jnp.float32)
    is_first = jnp.zeros((batch, steps), bool).at[:, 0].set(True)
    _, posts, _ = observe(dyn, dyn.initial(batch), jnp.asarray(tokens, jnp.float32), prev_actions, is_first,
                          jax.random.key(2))  # fmt: skip
    # The reward target of the reward token's head: symlog r_t.
    np.testing.assert_allclose(np.asarray(posts["reward"]), symlog(raw), rtol=1e-6, atol=1e-6)
    # The reward token of step t's chunk: symlog r_{t-1} (0 at the episode start), fed by hand.
    prev_reward = np.concatenate([np.zeros((batch, 1)), symlog(raw[:, :-1])], 1)
    cache = {k: v for k, v in dyn.initial(batch).items() if k in CACHE_KEYS}
    keep = 1.0 - np.asarray(is_first, np.float32)
    prev_actions, prev_reward = prev_actions * keep[..., None], jnp.asarray(prev_reward, jnp.float32)
    deter, _, _, _ = sequence(dyn, cache, prev_actions, prev_reward, posts["stoch"], is_first)
    np.testing.assert_allclose(np.asarray(posts["deter"]), np.asarray(deter), rtol=1e-5, atol=1e-5)


def test_reward_token_loss_is_half_squared_error_against_the_stopped_target():
    dyn = small_tssm()
    rng = np.random.default_rng(1)
    batch, steps = 2, 3
    predicted = rng.normal(size=(batch, steps))
    target = rng.normal(size=(batch, steps))
    posts_logits, priors_logits = (
        jax.nn.log_softmax(jnp.asarray(rng.normal(size=(batch, steps, 2, 3)), jnp.float32)) for _ in range(2)
    )

    def tokrew(predicted, target):
        posteriors = {"logits": posts_logits, "reward": target}
        priors = {"logits": priors_logits, "reward": predicted}
        losses, _ = dyn.losses(posteriors, priors, None, key=jax.random.key(0))
        return losses["tokrew"]

    args = (jnp.asarray(predicted, jnp.float32), jnp.asarray(target, jnp.float32))
    expected = 0.5 * (predicted - target) ** 2  # unit-variance Gaussian NLL up to its constant
    np.testing.assert_allclose(np.asarray(tokrew(*args)), expected, rtol=1e-5, atol=1e-7)
    into_prediction, into_target = jax.grad(lambda p, t: tokrew(p, t).sum(), argnums=(0, 1))(*args)
    np.testing.assert_allclose(np.asarray(into_prediction), predicted - target, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(into_target), 0.0)


def test_a_new_episode_sees_nothing_of_the_previous_one():
    """A new episode starts at step 3. Changing the reward of step 2 and the action recorded into step 3
    (the one that crosses the episode boundary) must move no output: not of steps >= 3 (a new episode), nor
    of steps <= 2 (r_2 enters with step 3's chunk). Without the episode start, it moves step 3's state."""
    dyn = small_tssm()
    rng = np.random.default_rng(2)
    batch, steps, start = 2, 5, 3
    tokens = jnp.asarray(rng.normal(size=(batch, steps, TOKENS + 1)), jnp.float32)
    prev_actions = jnp.asarray(rng.uniform(-1, 1, size=(batch, steps, ACTIONS)), jnp.float32)
    changed_tokens = tokens.at[:, start - 1, -1].add(5.0)
    changed_actions = prev_actions.at[:, start].multiply(-1.0)
    first = jnp.zeros((batch, steps), bool).at[:, 0].set(True)

    def outputs(tokens, prev_actions, is_first):
        _, posts, priors = observe(dyn, dyn.initial(batch), tokens, prev_actions, is_first, jax.random.key(3))
        return {"deter": posts["deter"], "prior": priors["logits"], "reward_pred": priors["reward"]}

    reset = first.at[:, start].set(True)
    base, moved = outputs(tokens, prev_actions, reset), outputs(changed_tokens, changed_actions, reset)
    for name in base:
        np.testing.assert_allclose(np.asarray(moved[name]), np.asarray(base[name]), rtol=1e-6, atol=1e-6,
                                   err_msg=name)  # fmt: skip
    base, moved = outputs(tokens, prev_actions, first), outputs(changed_tokens, prev_actions, first)
    for name in base:  # the reward of step 2 is no input of steps 0..2
        np.testing.assert_allclose(np.asarray(moved[name][:, :start]), np.asarray(base[name][:, :start]),
                                   rtol=1e-6, atol=1e-6, err_msg=name)  # fmt: skip
    assert np.abs(np.asarray(moved["deter"][:, start] - base["deter"][:, start])).max() > 1e-3
