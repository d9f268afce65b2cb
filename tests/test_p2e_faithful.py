"""Plan2Explore against its formulas, one test per fact that a one-line bug could break while
tests/test_p2e.py stays green. Each test is chosen to fail on a specific bug that scripts/mutations/p2e.py
puts in (scripts/mutation_check.py --agent p2e).

Reference: /work/shared/reference/ names Plan2Explore only as a protocol (thick.md) and a score row
(protocols.md); the formulas are the paper's (Sekar et al., ICML 2020) as DreamerV2's `expl.py` /
`configs.yaml` ship them (cited in agents/p2e/config.py): the intrinsic reward is the disagreement
D(s, a) = mean_d Var_k f_k(s, a)_d, and the explorer's reward is that alone (expl_intr_scale 1,
expl_extr_scale 0); the K one-step models regress the next latent on stop-gradiented inputs and targets.

* target-gradient, input-gradient: the ensemble's regression sends no gradient into its inputs (features of
  the world model's posteriors) or its targets (the next latents): only the ensemble learns from it.
* intr-scale-default: with the default config the exploration reward equals D exactly.

Expected values are computed here in float64 numpy from those formulas.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from agents.p2e import SPEC, Ensemble, P2EConfig
from agents.p2e.agent import ensemble_loss, exploration_reward
from bench import registry
from tasks import toy


def small_ensemble(in_size: int, out_size: int, members: int = 4) -> Ensemble:
    return Ensemble(in_size, out_size, members, 8, 1, act="silu", key=jax.random.key(0))


def member_outputs(ensemble: Ensemble, x: np.ndarray) -> np.ndarray:
    """(K, D) predictions of one input, each member's head called on its own."""
    arrays, static = eqx.partition(ensemble.heads, eqx.is_array)
    members = jax.tree.leaves(arrays)[0].shape[0]
    heads = [eqx.combine(jax.tree.map(lambda a: a[k], arrays), static) for k in range(members)]
    return np.stack([np.asarray(head(jnp.asarray(x, jnp.float32)), np.float64) for head in heads])


def test_ensemble_loss_sends_no_gradient_to_the_world_model():
    rng = np.random.default_rng(0)
    b, t, f, a, d = 2, 4, 3, 2, 3
    ensemble = small_ensemble(f + a, d)
    features, actions, targets = (jnp.asarray(rng.normal(size=(b, t, n)), jnp.float32) for n in (f, a, d))
    is_first = jnp.zeros((b, t), bool)

    def loss(ensemble, features, targets):
        return ensemble_loss(ensemble, features, actions, targets, is_first).sum()

    into_ensemble, into_features, into_targets = eqx.filter_grad(
        lambda args: loss(*args)
    )((ensemble, features, targets))
    np.testing.assert_array_equal(np.asarray(into_features), 0.0)
    np.testing.assert_array_equal(np.asarray(into_targets), 0.0)
    # Only the ensemble learns: d loss / d bias of member k's last layer = 2 sum_steps (f_k - target_{t+1}).
    last_bias = np.asarray(into_ensemble.heads.out.bias)  # (K, D)
    expected = np.zeros_like(last_bias, np.float64)
    for i in range(b):
        for s in range(t - 1):
            x = np.concatenate([np.asarray(features[i, s]), np.asarray(actions[i, s])])
            expected += 2.0 * (member_outputs(ensemble, x) - np.asarray(targets[i, s + 1], np.float64)[None])
    np.testing.assert_allclose(last_bias, expected, rtol=1e-4, atol=1e-5)


def test_default_exploration_reward_is_the_disagreement_alone():
    config = P2EConfig()
    assert (config.expl.intr_scale, config.expl.extr_scale) == (1.0, 0.0)
    built = registry.build_config(SPEC, toy.SUITE, ["debug"], task="reach").agent
    assert (built.expl.intr_scale, built.expl.extr_scale) == (1.0, 0.0)
    rng = np.random.default_rng(1)
    n, h, f, a = 2, 3, 3, 2
    ensemble = small_ensemble(f + a, 4, members=5)
    features = rng.normal(size=(n, h + 1, f))
    actions = rng.normal(size=(n, h, a))
    extrinsic = rng.normal(size=(n, h))  # must not count
    reward, _ = exploration_reward(
        ensemble, jnp.asarray(features, jnp.float32), jnp.asarray(actions, jnp.float32),
        jnp.asarray(extrinsic, jnp.float32), config.expl.intr_scale, config.expl.extr_scale,
    )  # fmt: skip
    for i in range(n):
        for s in range(1, h + 1):
            pred = member_outputs(ensemble, np.concatenate([features[i, s - 1], actions[i, s - 1]]))
            disagreement = pred.var(0, ddof=1).mean()
            np.testing.assert_allclose(float(reward[i, s]), disagreement, rtol=1e-5)
