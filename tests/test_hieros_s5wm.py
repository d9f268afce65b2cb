"""S5WM (agents/hieros/s5wm.py): the parallel training pass and the recurrent imagination step agree, and the
time alignment of /work/shared/reference/hieros_s5.md ("S5WM") holds (posterior from the current frame only;
prior at t from z_{t-1} and a_{t-1}, DreamerV3's pairing; episode starts drop the past)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.hieros.s5wm import S5WorldModel

TOKEN, ACTION, LENGTH = 6, 3, 12
SIZES = dict(stoch=4, classes=5, hidden=16, width=16, deter=12, blocks=2, state_size=8, ssm_blocks=2)
RESET_AT = 5


@pytest.fixture(autouse=True)
def strict_promotion():
    # Full float32 matmuls: these tests compare two evaluation orders of the same algebra, and on a GPU the
    # default precision (TF32 inputs) differs between them by ~1e-3 (seen on an H200; the S5 layer itself always
    # runs at the highest precision).
    with jax.numpy_dtype_promotion("strict"), jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module")
def model():
    return eqx.filter_jit(lambda key: S5WorldModel(TOKEN, ACTION, **SIZES, key=key))(jax.random.key(0))


def _inputs(seed: int):
    keys = jax.random.split(jax.random.key(seed), 2)
    tokens = jax.random.normal(keys[0], (LENGTH, TOKEN))
    actions = jax.nn.one_hot(jax.random.randint(keys[1], (LENGTH,), 0, ACTION), ACTION)
    is_first = jnp.zeros(LENGTH, bool).at[RESET_AT].set(True)
    return tokens, actions, is_first


@eqx.filter_jit
def _observe(model, carry, tokens, actions, is_first, key):
    return model.observe(carry, tokens, actions, is_first, key=key)


def test_parallel_training_pass_equals_recurrent_steps(model):
    tokens, actions, is_first = _inputs(1)
    # a non-trivial carry from a previous chunk, so the first step continues a running episode
    carry, _, _ = _observe(model, model.initial(), *_inputs(2), jax.random.key(3))
    last, post, prior = _observe(model, carry, tokens, actions, is_first, jax.random.key(4))

    @eqx.filter_jit
    def recurrent(model, carry, post_stoch, actions, is_first):
        def body(inner, inputs):
            states, prev_stoch = inner
            stoch, action, first = inputs
            states, logits, deter = model.step(states, prev_stoch, action, first)
            return (states, stoch), (logits, deter, states)

        return jax.lax.scan(body, (carry["states"], carry["stoch"]), (post_stoch, actions, is_first))

    (states, _), (logits, deter, all_states) = recurrent(model, carry, post["stoch"], actions, is_first)
    np.testing.assert_allclose(logits, prior["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(deter, prior["deter"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(all_states, post["states"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states, last["states"], rtol=1e-5, atol=1e-5)

    # imagine_step from a posterior state continues the same recurrence (here with the observed z)
    t = 7
    start = {"states": post["states"][t], "stoch": post["stoch"][t]}
    imagine = eqx.filter_jit(lambda m, c, a, k: m.imagine_step(c, a, key=k))
    _, out = imagine(model, start, actions[t + 1], jax.random.key(5))
    np.testing.assert_allclose(out["logits"], prior["logits"][t + 1], rtol=1e-5, atol=1e-5)


def test_time_alignment_of_posterior_and_prior(model):
    """Jacobians: which inputs each step's posterior and prior may depend on."""
    tokens, actions, is_first = _inputs(6)
    carry = model.initial()

    @eqx.filter_jit
    def jacobians(model, tokens, actions):
        def outputs(tokens, actions):
            _, post, prior = model.observe(carry, tokens, actions, is_first, key=jax.random.key(7))
            return post["logits"].sum((1, 2)), prior["logits"].sum((1, 2))

        return jax.jacobian(outputs, argnums=(0, 1))(tokens, actions)

    (post_tok, post_act), (prior_tok, prior_act) = jacobians(model, tokens, actions)
    depends = lambda j: np.abs(np.asarray(j)).sum(-1) > 1e-7  # (T_out, T_in)
    # posterior: the current frame only, no actions
    np.testing.assert_array_equal(depends(post_tok), np.eye(LENGTH, dtype=bool))
    assert not depends(post_act).any()
    # prior at t: z_{t-1} (frames < t) and prev_actions[<= t], nothing from before an episode start
    t_out, t_in = np.meshgrid(np.arange(LENGTH), np.arange(LENGTH), indexing="ij")
    same_episode = (t_in >= RESET_AT) == (t_out >= RESET_AT)
    np.testing.assert_array_equal(depends(prior_tok), (t_in < t_out) & same_episode)
    # the action into an episode start is zeroed
    expected_act = (t_in <= t_out) & same_episode & (t_in != RESET_AT)
    np.testing.assert_array_equal(depends(prior_act), expected_act)


def test_episode_start_uses_the_learned_initial_latent(model):
    tokens, actions, is_first = _inputs(8)
    _, _, prior = _observe(model, model.initial(), tokens, actions, is_first, jax.random.key(9))
    first_step = eqx.filter_jit(lambda m: m.step(m.initial()["states"], m.initial_stoch(), jnp.zeros(ACTION)))
    fresh_states, logits, _ = first_step(model)
    # the reset step sees exactly what the first step of a fresh episode sees
    np.testing.assert_allclose(prior["logits"][RESET_AT], logits, rtol=1e-5, atol=1e-5)
    assert fresh_states.dtype == jnp.complex64 and fresh_states.shape == (4, 4)
