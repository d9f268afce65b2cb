"""VSG and SVSG against the reference (/work/shared/reference/vsg_bbs.md), one test per fact that a one-line
bug could break while tests/test_vsg_gate.py and tests/test_vsg_dynamics.py stay green. Each test is chosen to
fail on a specific bug that scripts/mutations/vsg.py puts in (scripts/mutation_check.py --agent vsg):

* posterior-old-state, imagined-prior-old-state: VSG's posterior q(z_t | h_t, embed_t) and prior p(z_t | h_t)
  read the NEW deterministic state h_t = g * h_hat + (1 - g) * h_{t-1}, never h_{t-1}.
* svsg-dyn-rep-swapped: SVSG's dyn term trains only the prior, rep only the posterior (DreamerV3's
  stop-gradients), both as the masked KL sum_d g_d KL(post_d || prior_d).
* masked-kl-no-gate-gradient: the gate in that sum keeps its straight-through gradient (d / d g_d = KL_d).
* svsg-std: SVSG's std = 2 sigmoid(s / 2) + 0.1.

Expected values are closed forms computed here in float64 numpy (Gaussian KL and its derivatives, the std
formula on chosen biases), or invariances the formulas imply: with every gate open and the cell blind to
h_{t-1}, h_t does not depend on h_{t-1}, so neither may the posterior or prior of step t.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from agents.vsg import gate as gate_lib
from agents.vsg.agent import GatedStateConfig
from agents.vsg.dynamics import GatedRSSM, StochasticGatedSSM

B, E, A = 3, 5, 2
OPEN = 200.0  # a gate logit whose Bernoulli sample is always 1 in float32


def open_gates_blind_to_the_state(dynamics, state_size: int):
    """Every gate open, and the cell's (reset, candidate, update) parts independent of the previous state:
    zero the rows of the state inputs (blocks = 1: the cell reads [state; x]) and the update part's
    weights."""
    parts = dynamics.cell.parts
    assert parts.blocks == 1
    third = parts.weight.shape[-1] // 3
    weight = parts.weight.at[:, :state_size].set(0.0)
    weight = weight.reshape(1, -1, 3, third).at[:, :, 2].set(0.0).reshape(parts.weight.shape)
    bias = parts.bias.reshape(3, third).at[2].set(OPEN - gate_lib.GATE_BIAS).reshape(-1)
    return eqx.tree_at(lambda d: (d.cell.parts.weight, d.cell.parts.bias), dynamics, (weight, bias))


def two_starts_differing_in_deter(dynamics, rng):
    stoch = jax.nn.one_hot(rng.integers(0, dynamics.classes, size=(B, dynamics.stoch)), dynamics.classes)
    deters = [jnp.asarray(3.0 * rng.normal(size=(B, dynamics.deter)), jnp.float32) for _ in range(2)]
    return [{"deter": deter, "stoch": stoch} for deter in deters]


def small_vsg(**kwargs) -> GatedRSSM:
    dynamics = GatedRSSM(E, A, deter=8, hidden=8, stoch=3, classes=4, blocks=1, key=jax.random.key(0),
                         **kwargs)  # fmt: skip
    return open_gates_blind_to_the_state(dynamics, 8)


@eqx.filter_jit
def observe(dynamics, latent, tokens, actions, is_first, key):
    return dynamics.observe(latent, tokens, actions, is_first, key=key)


@eqx.filter_jit
def imagine_step(dynamics, latent, action, key):
    return dynamics.imagine_step(latent, action, key=key)


def test_vsg_posterior_reads_the_new_deterministic_state():
    dynamics = small_vsg()
    rng = np.random.default_rng(0)
    starts = two_starts_differing_in_deter(dynamics, rng)
    tokens = jnp.asarray(rng.normal(size=(B, 1, E)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-1, 1, size=(B, 1, A)), jnp.float32)
    is_first = jnp.zeros((B, 1), bool)
    (_, post_a, _), (_, post_b, _) = (observe(dynamics, s, tokens, actions, is_first, jax.random.key(1))
                                      for s in starts)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(post_a["gate"]), 1.0)
    # h_1 = h_hat does not depend on h_0 here, so q(z_1 | h_1, embed_1) may not either ...
    np.testing.assert_allclose(np.asarray(post_a["deter"]), np.asarray(post_b["deter"]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(post_a["logits"]), np.asarray(post_b["logits"]), atol=1e-5)
    # ... while the posterior network does tell the two old states apart (so reading h_0 would show).
    posterior_of = jax.vmap(dynamics._post_one)
    old_a, old_b = (posterior_of(s["deter"], tokens[:, 0]) for s in starts)
    assert np.abs(np.asarray(old_a - old_b)).max() > 1e-2


def test_vsg_imagined_prior_reads_the_new_deterministic_state():
    dynamics = small_vsg(unimix=0.0)
    # A sharp prior (logits x 100): its one-hot sample is its argmax, so the sample shows which state it read.
    dynamics = eqx.tree_at(lambda d: d.prior_out.weight, dynamics, 100.0 * dynamics.prior_out.weight)
    rng = np.random.default_rng(1)
    starts = two_starts_differing_in_deter(dynamics, rng)
    action = jnp.asarray(rng.uniform(-1, 1, size=(B, A)), jnp.float32)
    next_a, next_b = (imagine_step(dynamics, s, action, jax.random.key(2)) for s in starts)
    np.testing.assert_allclose(np.asarray(next_a["deter"]), np.asarray(next_b["deter"]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(next_a["stoch"]), np.asarray(next_b["stoch"]))
    # the prior's argmax differs between the two OLD states (so sampling from p(z | h_{t-1}) would show)
    prior_of = jax.vmap(dynamics._prior_one)
    old_a, old_b = (np.asarray(prior_of(s["deter"])).argmax(-1) for s in starts)
    assert (old_a != old_b).any()


# ------------------------------------------------------------------------------------------------- SVSG


def numpy_gaussian_kl_and_grads(ma, sa, mb, sb):
    """KL(N(ma, sa) || N(mb, sb)) per dimension and its partial derivatives (float64)."""
    kl = np.log(sb / sa) + (sa**2 + (ma - mb) ** 2) / (2 * sb**2) - 0.5
    grads = {
        "post_mean": (ma - mb) / sb**2,
        "post_std": -1.0 / sa + sa / sb**2,
        "prior_mean": (mb - ma) / sb**2,
        "prior_std": 1.0 / sb - (sa**2 + (ma - mb) ** 2) / sb**3,
    }
    return kl, grads


def test_svsg_dyn_trains_the_prior_rep_the_posterior_and_both_reach_the_gate():
    stoch, steps = 4, 3
    dynamics = StochasticGatedSSM(E, A, stoch=stoch, hidden=8, blocks=1, free_nats=0.0, key=jax.random.key(0))
    rng = np.random.default_rng(2)
    shape = (B, steps, stoch)
    values = {
        "post_mean": rng.normal(size=shape), "post_std": rng.uniform(0.3, 2.0, size=shape),
        "prior_mean": rng.normal(size=shape), "prior_std": rng.uniform(0.3, 2.0, size=shape),
        "gate": (rng.uniform(size=shape) < 0.5).astype(np.float64),
    }  # fmt: skip
    values["gate"][..., 0] = 1.0  # every step has an open gate: its masked KL is > 0, away from the clip at 0
    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
    gate_logits = jnp.asarray(rng.normal(size=shape), jnp.float32)

    def term(name):
        def loss(arrays):
            posteriors = {"mean": arrays["post_mean"], "std": arrays["post_std"], "gate": arrays["gate"],
                          "gate_logits": gate_logits}  # fmt: skip
            priors = {"mean": arrays["prior_mean"], "std": arrays["prior_std"]}
            losses, _ = dynamics.losses(posteriors, priors, None, key=jax.random.key(0))
            return losses[name].sum()

        return loss

    kl, kl_grads = numpy_gaussian_kl_and_grads(
        values["post_mean"], values["post_std"], values["prior_mean"], values["prior_std"]
    )
    gate = values["gate"]
    trains = {"dyn": ("prior_mean", "prior_std"), "rep": ("post_mean", "post_std")}
    for name, trained in trains.items():
        value, grads = jax.value_and_grad(term(name))(arrays)
        np.testing.assert_allclose(float(value), (gate * kl).sum(), rtol=1e-5)
        for key in kl_grads:
            expected = gate * kl_grads[key] if key in trained else np.zeros(shape)
            np.testing.assert_allclose(np.asarray(grads[key]), expected, rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name} {key}")  # fmt: skip
        # the straight-through gate: d (sum_d g_d KL_d) / d g_d = KL_d
        np.testing.assert_allclose(np.asarray(grads["gate"]), kl, rtol=1e-4, atol=1e-6,
                                   err_msg=f"{name} gate")  # fmt: skip


def test_masked_kl_gradient_reaches_the_straight_through_gate():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 6))
    kl = rng.uniform(0.1, 2.0, size=(4, 6))
    key = jax.random.key(4)

    def masked(logits, kl):
        return gate_lib.masked_kl(kl, gate_lib.sample_gate(logits, key=key)).sum()

    gate = np.asarray(gate_lib.sample_gate(jnp.asarray(logits, jnp.float32), key=key), np.float64)
    assert set(np.unique(gate)) == {0.0, 1.0}
    value, (into_logits, into_kl) = jax.value_and_grad(masked, argnums=(0, 1))(
        jnp.asarray(logits, jnp.float32), jnp.asarray(kl, jnp.float32)
    )
    probs = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(float(value), (gate * kl).sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(into_kl), gate, atol=1e-7)
    # straight-through: d g / d p = 1, so d / d logit = KL * p (1 - p)
    np.testing.assert_allclose(np.asarray(into_logits), kl * probs * (1 - probs), rtol=1e-5, atol=1e-7)


def test_svsg_std_is_two_sigmoid_half_plus_min_std():
    assert GatedStateConfig().min_std == 0.1
    stoch = 4
    dynamics = StochasticGatedSSM(E, A, stoch=stoch, hidden=8, blocks=1, min_std=0.1, key=jax.random.key(0))
    # Output layers with zero weights: the raw (mean, std) statistics are their biases.
    post_bias = np.array([0.5, -1.0, 2.0, 0.0, -6.0, -1.0, 0.0, 3.0])
    prior_bias = np.array([-0.3, 0.7, 0.0, 1.5, 4.0, 1.0, -2.0, 8.0])
    for name, bias in (("post_out", post_bias), ("prior_out", prior_bias)):
        layer = getattr(dynamics, name)
        dynamics = eqx.tree_at(lambda d: (getattr(d, name).weight, getattr(d, name).bias), dynamics,
                               (jnp.zeros_like(layer.weight), jnp.asarray(bias, jnp.float32)))  # fmt: skip
    rng = np.random.default_rng(5)
    tokens = jnp.asarray(rng.normal(size=(B, 2, E)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-1, 1, size=(B, 2, A)), jnp.float32)
    _, post, prior = observe(dynamics, dynamics.initial(B), tokens, actions, jnp.zeros((B, 2), bool),
                             jax.random.key(6))  # fmt: skip
    for stats, bias in ((post, post_bias), (prior, prior_bias)):
        mean, raw_std = bias[:stoch], bias[stoch:]
        std = 2.0 / (1.0 + np.exp(-raw_std / 2.0)) + 0.1
        np.testing.assert_allclose(np.asarray(stats["mean"]), np.broadcast_to(mean, (B, 2, stoch)), atol=1e-6)
        np.testing.assert_allclose(np.asarray(stats["std"]), np.broadcast_to(std, (B, 2, stoch)), rtol=1e-6)
