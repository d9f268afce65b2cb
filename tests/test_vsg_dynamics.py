"""VSG's gated RSSM and SVSG's gated Gaussian state: gating semantics, resets, shapes and loss terms."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.vsg import gate as gate_lib
from agents.vsg.dynamics import GatedCell, GatedRSSM, StochasticGatedSSM

B, T, E, A = 3, 6, 7, 4


# One compiled program per dynamics structure and shape, shared by the tests (eager scans are slow).
@eqx.filter_jit
def observe(dynamics, latent, tokens, actions, is_first, key):
    return dynamics.observe(latent, tokens, actions, is_first, key=key)


@eqx.filter_jit
def losses_of(dynamics, post, prior):
    return dynamics.losses(post, prior, None, key=jax.random.key(5))


@eqx.filter_jit
def imagine_step(dynamics, latent, action, key):
    return dynamics.imagine_step(latent, action, key=key)


# Built once per setting: eager initialisation dispatches many small ops.
@functools.cache
def _build(cls, settings):
    return cls(E, A, **dict(settings), key=jax.random.key(0))


def make_vsg(**kwargs):
    return _build(GatedRSSM, tuple(sorted((dict(deter=16, hidden=8, stoch=4, classes=4, blocks=2) | kwargs).items())))


def make_svsg(**kwargs):
    return _build(StochasticGatedSSM, tuple(sorted((dict(stoch=16, hidden=8, blocks=2) | kwargs).items())))


def force_gates(dynamics, logit: float):
    """Make every update-gate logit equal `logit` (zero weights and a constant bias on the update part)."""
    parts = dynamics.cell.parts
    blocks = parts.blocks
    third = parts.weight.shape[-1] // 3
    weight = parts.weight.reshape(blocks, -1, 3, third).at[:, :, 2].set(0.0).reshape(parts.weight.shape)
    bias = parts.bias.reshape(blocks, 3, third).at[:, 2].set(logit - gate_lib.GATE_BIAS).reshape(-1)
    dynamics = eqx.tree_at(lambda d: d.cell.parts.weight, dynamics, weight)
    return eqx.tree_at(lambda d: d.cell.parts.bias, dynamics, bias)


def sequence(first_step_is_first=False):
    tokens = jax.random.normal(jax.random.key(1), (B, T, E))
    actions = jax.random.uniform(jax.random.key(2), (B, T, A), minval=-1, maxval=1)
    is_first = jnp.zeros((B, T), bool).at[:, 0].set(first_step_is_first)
    return tokens, actions, is_first


def random_latent(dynamics):
    latent = dynamics.initial(B)
    return jax.tree.map(lambda x: jax.random.normal(jax.random.key(9), x.shape), latent)


def test_vsg_all_gates_closed_carries_the_deterministic_state():
    dynamics = force_gates(make_vsg(), -200.0)  # sigmoid(-200) is 0 in float32: no gate can open
    start = random_latent(dynamics)
    tokens, actions, is_first = sequence()
    last, post, _ = observe(dynamics, start, tokens, actions, is_first, jax.random.key(3))
    assert float(post["gate"].max()) == 0.0
    np.testing.assert_array_equal(post["deter"], jnp.broadcast_to(start["deter"][:, None], post["deter"].shape))
    np.testing.assert_array_equal(last["deter"], start["deter"])
    following = imagine_step(dynamics, last, actions[:, 0], jax.random.key(4))
    np.testing.assert_array_equal(following["deter"], start["deter"])


def test_vsg_all_gates_open_gives_the_gru_candidate():
    dynamics = force_gates(make_vsg(), 200.0)
    start = random_latent(dynamics)
    action = jnp.full((B, A), 0.5)
    following = imagine_step(dynamics, start, action, jax.random.key(4))
    # hand-written cell: x = act(norm(Linear([z; a]))); per block [h_block; x] -> (r, c, u)
    cell = dynamics.cell
    for b in range(B):
        x = cell.input_layer(jnp.concatenate([start["stoch"][b].reshape(-1), action[b]]))
        halves = start["deter"][b].reshape(2, -1)
        candidate = []
        for block in range(2):
            inputs = jnp.concatenate([halves[block], x])
            out = inputs @ cell.parts.weight[block] + cell.parts.bias.reshape(2, -1)[block]
            reset, cand, _ = jnp.split(out, 3)
            candidate.append(jnp.tanh(jax.nn.sigmoid(reset) * cand))
        np.testing.assert_allclose(following["deter"][b], jnp.concatenate(candidate), rtol=1e-5, atol=1e-6)


def test_svsg_all_gates_closed_carries_the_state_and_the_masked_kl_is_zero():
    dynamics = force_gates(make_svsg(), -200.0)
    start = random_latent(dynamics)
    tokens, actions, is_first = sequence()
    last, post, prior = observe(dynamics, start, tokens, actions, is_first, jax.random.key(3))
    np.testing.assert_array_equal(post["stoch"], jnp.broadcast_to(start["stoch"][:, None], post["stoch"].shape))
    np.testing.assert_array_equal(last["stoch"], start["stoch"])
    following = imagine_step(dynamics, last, actions[:, 0], jax.random.key(4))
    np.testing.assert_array_equal(following["stoch"], start["stoch"])
    losses, metrics = losses_of(dynamics, post, prior)
    assert float(metrics["dyn/dyn_kl"]) == 0.0 and float(metrics["dyn/rep_kl"]) == 0.0
    assert float(metrics["dyn/gate/open_rate"]) == 0.0


def test_svsg_masked_kl_counts_only_open_gates():
    dynamics = make_svsg()
    tokens, actions, is_first = sequence(True)
    _, post, prior = observe(dynamics, dynamics.initial(B), tokens, actions, is_first, jax.random.key(3))
    gate = post["gate"]
    assert 0.0 < float(gate.mean()) < 1.0
    kl = gate_lib.gaussian_kl(post["mean"], post["std"], prior["mean"], prior["std"])
    _, metrics = losses_of(dynamics, post, prior)
    expected = float(jnp.where(gate > 0.5, kl, 0.0).sum(-1).mean())
    assert float(metrics["dyn/dyn_kl"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["dyn/dyn_kl"]) < float(kl.sum(-1).mean())


def test_svsg_prior_and_posterior_share_the_gate():
    # With one step, observe() and imagine_step() draw the gate from the same key, so the dimensions that
    # the posterior keeps from the previous state are exactly those the prior keeps.
    dynamics = make_svsg()
    start = random_latent(dynamics)
    tokens, actions, _ = sequence()
    key = jax.random.key(7)
    _, post, _ = observe(dynamics, start, tokens[:, :1], actions[:, :1], jnp.zeros((B, 1), bool), key)
    prior = imagine_step(dynamics, start, actions[:, 0], jax.random.split(key, 1)[0])
    kept_by_posterior = post["stoch"][:, 0] == start["stoch"]
    kept_by_prior = prior["stoch"] == start["stoch"]
    np.testing.assert_array_equal(kept_by_posterior, post["gate"][:, 0] == 0.0)
    np.testing.assert_array_equal(kept_by_posterior, kept_by_prior)
    assert 0 < int(kept_by_prior.sum()) < kept_by_prior.size


@pytest.mark.parametrize("make", [make_vsg, make_svsg])
def test_is_first_resets_the_latent(make):
    dynamics = make()
    tokens, actions, is_first = sequence(True)
    from_random = observe(dynamics, random_latent(dynamics), tokens, actions, is_first, jax.random.key(3))
    from_zero = observe(dynamics, dynamics.initial(B), tokens, actions, is_first, jax.random.key(3))
    for a, b in zip(jax.tree.leaves(from_random), jax.tree.leaves(from_zero)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [make_vsg, make_svsg])
def test_gradient_reaches_the_gate_through_the_straight_through_sample(make):
    dynamics = make()
    tokens, actions, is_first = sequence(True)

    def objective(dyn):
        _, post, _ = observe(dyn, dyn.initial(B), tokens, actions, is_first, jax.random.key(3))
        return dyn.features({k: post[k] for k in dyn.initial(1)}).sum()

    grads = eqx.filter_jit(eqx.filter_grad(objective))(dynamics)
    parts = grads.cell.parts.weight
    update_grad = parts.reshape(2, -1, 3, parts.shape[-1] // 3)[:, :, 2]
    assert float(jnp.abs(update_grad).max()) > 0.0


@pytest.mark.parametrize("make", [make_vsg, make_svsg])
def test_loss_terms_and_gate_metrics(make):
    dynamics = make(gate_prior=0.3, gate_free=0.05)
    tokens, actions, is_first = sequence(True)
    _, post, prior = observe(dynamics, dynamics.initial(B), tokens, actions, is_first, jax.random.key(3))
    losses, metrics = losses_of(dynamics, post, prior)
    assert set(losses) == {"dyn", "rep", "gate"}
    assert all(v.shape == (B, T) for v in losses.values())
    assert float(losses["dyn"].min()) >= 1.0  # free nats
    probs = jax.nn.sigmoid(post["gate_logits"])
    by_hand = (probs * jnp.log(probs / 0.3) + (1 - probs) * jnp.log((1 - probs) / 0.7)).sum(-1).mean()
    assert float(losses["gate"].mean()) == pytest.approx(max(float(by_hand), 0.05), rel=1e-5)
    assert float(metrics["dyn/gate/open_rate"]) == pytest.approx(float(post["gate"].mean()))
    # at initialisation the gate probability is about sigmoid(0 - 1)
    assert 0.15 < float(metrics["dyn/gate/open_prob"]) < 0.4


def test_features_and_decoder_inputs_shapes():
    vsg, svsg = make_vsg(), make_svsg()
    latent = vsg.initial(B)
    assert vsg.features(latent).shape == (B, vsg.feature_size) == (B, 16 + 16)
    wide, narrow = vsg.decoder_inputs(latent)
    assert wide.shape == (B, 16) and narrow.shape == (B, 16)
    latent = svsg.initial(B)
    assert svsg.features(latent).shape == (B, svsg.feature_size) == (B, 16)
    wide, narrow = svsg.decoder_inputs(latent)
    assert wide.shape == (B, 16) and narrow.shape == (B, 0)


def test_bad_shapes_and_settings_raise_clear_errors():
    dynamics = make_vsg()
    tokens, actions, is_first = sequence()
    with pytest.raises(ValueError, match="must share"):
        observe(dynamics, dynamics.initial(B), tokens, actions[:, :-1], is_first, jax.random.key(0))
    with pytest.raises(ValueError, match="gate_prior"):
        make_vsg(gate_prior=1.5)
    with pytest.raises(ValueError, match="not divisible"):
        GatedCell(10, 4, 8, 3, "silu", key=jax.random.key(0))
