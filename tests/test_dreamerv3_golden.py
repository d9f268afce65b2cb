"""Golden values for the DreamerV3 agent: the RSSM against a numpy form of the reference equations, the
agent's wiring of targets and hyperparameters into the loss functions, and the config defaults against the
hyperparameter table of /work/shared/reference/dreamerv3.md.

The wiring test replaces the loss functions the agent calls with stand-ins that return their targets, so
the agent's own arithmetic (continue target with the discount, raw reward target, repval bootstrap from
step 0 of the imagination returns, lambda and scales from the config) is checked value by value.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents.dreamerv3.agent as agent_module
from agents.common import distributions as dists
from agents.dreamerv3 import RSSM, SPEC, DreamerV3Config
from agents.dreamerv3.agent import LATENT_PREFIX
from bench import config as config_lib
from bench import registry, spaces
from tests import numpy_reference as ref
from tests.test_dreamerv3 import tiny_config

RTOL, ATOL = 2e-5, 2e-6


def _rssm(free_nats: float = 1.0) -> RSSM:
    return RSSM(5, 2, deter=8, hidden=4, stoch=2, classes=3, blocks=2, img_layers=2, obs_layers=1,
                unimix=0.01, free_nats=free_nats, key=jax.random.key(0))  # fmt: skip


def _mlp(x, mlp):
    for layer in mlp.layers:
        x = ref.normed_linear(x, layer)
    return x


def test_rssm_observe_matches_the_reference_equations():
    rng = np.random.default_rng(0)
    rssm = ref.randomise(_rssm(), rng)
    b, t = 2, 3
    start = {"deter": rng.normal(size=(b, 8)), "stoch": np.eye(3)[rng.integers(0, 3, size=(b, 2))]}
    tokens, actions = rng.normal(size=(b, t, 5)), rng.normal(size=(b, t, 2))
    is_first = np.array([[True, False, False], [False, False, True]])
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    # One jitted call: eager dispatch of the scan's small ops is slower than compiling them once.
    observe = eqx.filter_jit(lambda m, *args: m.observe(*args, key=jax.random.key(1)))
    last, posts, priors = observe(rssm, {k: f32(v) for k, v in start.items()}, f32(tokens), f32(actions), is_first)
    last, posts, priors = jax.tree.map(np.asarray, (last, posts, priors))
    for i in range(b):
        deter, stoch = start["deter"][i], start["stoch"][i]
        for j in range(t):
            action = actions[i, j]
            if is_first[i, j]:  # episode start: latent and previous action reset to zero
                deter, stoch, action = np.zeros_like(deter), np.zeros_like(stoch), np.zeros_like(action)
            deter = ref.block_gru(rssm.core, deter, stoch.reshape(-1), action)
            post = ref.linear(_mlp(np.concatenate([deter, tokens[i, j]]), rssm.post_mlp), rssm.post_out)
            prior = ref.linear(_mlp(deter, rssm.prior_mlp), rssm.prior_out)
            np.testing.assert_allclose(posts["deter"][i, j], deter, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(posts["logits"][i, j], ref.unimix_log_probs(post.reshape(2, 3), 0.01), rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(priors["logits"][i, j], ref.unimix_log_probs(prior.reshape(2, 3), 0.01), rtol=RTOL, atol=ATOL)
            # The sample is random; it must be one-hot, and the recursion continues from it.
            stoch = np.asarray(posts["stoch"][i, j], np.float64)
            assert np.all(stoch.sum(-1) == 1.0) and set(np.unique(stoch)) <= {0.0, 1.0}
        np.testing.assert_allclose(last["deter"][i], deter, rtol=RTOL, atol=ATOL)

    imagine = eqx.filter_jit(lambda m, latent, action: m.imagine_step(latent, action, key=jax.random.key(2)))
    following = imagine(rssm, {k: f32(v[:, -1]) for k, v in posts.items() if k != "logits"}, f32(actions[:, 0]))
    for i in range(b):
        deter = ref.block_gru(rssm.core, posts["deter"][i, -1], posts["stoch"][i, -1].reshape(-1), actions[i, 0])
        np.testing.assert_allclose(following["deter"][i], deter, rtol=RTOL, atol=ATOL)


def test_rssm_losses_train_prior_with_dyn_and_posterior_with_rep():
    """One step from an episode start (deter does not depend on the posterior): the dyn loss reaches only the
    prior network, the rep loss only the posterior network; forward both equal max(free, KL(post || prior))."""
    rng = np.random.default_rng(1)
    rssm = ref.randomise(_rssm(free_nats=0.0), rng)
    tokens = jnp.asarray(rng.normal(size=(3, 1, 5)), jnp.float32)
    actions = jnp.zeros((3, 1, 2), jnp.float32)
    first = jnp.ones((3, 1), bool)

    def term(model, name):
        _, posts, priors = model.observe(model.initial(3), tokens, actions, first, key=jax.random.key(0))
        losses, _ = model.losses(posts, priors, None, key=jax.random.key(1))
        return losses[name].sum()

    size = lambda tree: max(float(jnp.abs(x).max()) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))
    dyn, rep = eqx.filter_jit(lambda m: (eqx.filter_grad(lambda m: term(m, "dyn"))(m),
                                          eqx.filter_grad(lambda m: term(m, "rep"))(m)))(rssm)  # fmt: skip
    assert size((dyn.post_mlp, dyn.post_out)) == 0.0 and size((dyn.prior_mlp, dyn.prior_out)) > 1e-4
    assert size((rep.prior_mlp, rep.prior_out)) == 0.0 and size((rep.post_mlp, rep.post_out)) > 1e-4


# ------------------------------------------------------------------------------------------------ wiring


def test_agent_wires_targets_and_hyperparameters_into_the_losses(monkeypatch):
    config = tiny_config(**{"imagination.lam": 0.9, "actor.entropy": 0.01, "critic.slow_reg": 0.7})
    obs_space = {"vector": spaces.box((3,), -10.0, 10.0), **spaces.step_spaces()}
    agent = SPEC.make(config, obs_space, {"action": spaces.discrete(3)})
    state = agent.init(key=jax.random.key(0))
    rng = np.random.default_rng(2)
    b, t = config.batch_size, config.batch_length + config.replay_context
    batch = {
        "vector": rng.normal(size=(b, t, 3)).astype(np.float32),
        "reward": (rng.normal(size=(b, t)) * 5.0).astype(np.float32),  # beyond 1: symlog would change it
        "is_first": np.zeros((b, t), bool),
        "is_last": np.zeros((b, t), bool),
        "is_terminal": np.zeros((b, t), bool),
        "action": rng.integers(0, 3, size=(b, t)).astype(np.int32),
    }
    batch["is_terminal"][0, 3] = batch["is_last"][0, 3] = batch["is_last"][1, 2] = True
    for key, value in eqx.filter_eval_shape(lambda: agent.initial_carry(agent.init(key=jax.random.key(0)), 1))["latent"].items():
        batch[LATENT_PREFIX + key] = np.zeros((b, t, *value.shape[1:]), np.float16)

    seen, arrays = {}, {}

    def fake_imagination_loss(actor, critic, slow, norm, features, actions, reward, cont, bins, **kwargs):
        seen["imagination"] = kwargs
        n, horizon = actions.shape[:2]
        # Returns that name their own start and step: 1000 * step + start index.
        returns = jnp.arange(n, dtype=jnp.float32)[:, None] + 1000.0 * jnp.arange(horizon, dtype=jnp.float32)
        zeros = jnp.zeros((n, horizon), jnp.float32)
        return {"policy": zeros, "value": zeros}, returns, norm, {}

    def fake_replay_value_loss(critic, slow, features, reward, cont, is_last, bootstrap, bins, **kwargs):
        seen["replay"] = kwargs
        arrays.update(repval_reward=reward, repval_cont=cont, repval_last=is_last)
        return bootstrap

    monkeypatch.setattr(agent_module, "imagination_loss", fake_imagination_loss)
    monkeypatch.setattr(agent_module, "replay_value_loss", fake_replay_value_loss)
    monkeypatch.setattr(dists, "twohot_loss", lambda logits, target, bins: target)  # the reward loss's target
    monkeypatch.setattr(dists, "bernoulli_loss", lambda logit, target: target)  # the continue loss's target

    @eqx.filter_jit
    def losses(state, batch):
        terms, _, _, _ = agent._losses(state.nets, state, batch, key=jax.random.key(3), train=True)
        return {k: terms[k] for k in ("rew", "con", "repval")}, dict(arrays)

    terms, captured = losses(state, batch)
    trained = lambda x: np.asarray(x)[:, config.replay_context :]
    discount = 1.0 - 1.0 / 333.0  # reference: continue target = (1 - terminal) * (1 - 1/333)
    np.testing.assert_allclose(terms["rew"], trained(batch["reward"]), rtol=1e-6)
    np.testing.assert_allclose(terms["con"], (1.0 - trained(batch["is_terminal"])) * discount, rtol=1e-6)
    np.testing.assert_allclose(captured["repval_cont"], (1.0 - trained(batch["is_terminal"])) * discount, rtol=1e-6)
    np.testing.assert_allclose(captured["repval_reward"], trained(batch["reward"]), rtol=1e-6)
    np.testing.assert_array_equal(captured["repval_last"], trained(batch["is_last"]))
    # repval bootstraps from step 0 of the imagination returns of the matching start state (b, t) -> b T + t.
    steps = config.batch_length
    np.testing.assert_array_equal(terms["repval"], np.arange(b * steps, dtype=np.float32).reshape(b, steps))
    assert seen["imagination"]["lam"] == 0.9 and seen["replay"]["lam"] == 0.9
    assert seen["imagination"]["entropy_scale"] == 0.01
    assert seen["imagination"]["slow_reg"] == 0.7 and seen["replay"]["slow_reg"] == 0.7


# ------------------------------------------------------------------------------------------ the defaults


def test_config_defaults_match_the_reference_table():
    c = DreamerV3Config()
    # World model (reference: World model).
    assert dataclasses.asdict(c.rssm) == dict(
        deter=8192, hidden=1024, stoch=32, classes=64, blocks=8, dyn_layers=1, img_layers=2, obs_layers=1,
        unimix=0.01, free_nats=1.0, absolute=False, act="silu", latent="categorical", min_std=0.1,
    )  # fmt: skip
    assert dataclasses.asdict(c.loss_scales) == dict(
        rec=1.0, rew=1.0, con=1.0, dyn=1.0, rep=0.1, policy=1.0, value=1.0, repval=0.3
    )
    for part in (c.encoder, c.decoder):
        assert (part.depth, part.mults, part.kernel, part.minres, part.units, part.layers) == (64, (2, 3, 4, 4), 5, 4, 1024, 3)
    assert c.decoder.blocks == 8 and c.decoder.outscale == 1.0 and c.encoder.symlog
    # Heads (reference: reward 1 layer twohot, continue 1 layer, policy and value 3 x 1024, zero outputs).
    assert (c.reward_head.layers, c.reward_head.units, c.reward_head.bins, c.reward_head.outscale) == (1, 1024, 255, 0.0)
    assert (c.cont_head.layers, c.cont_head.units, c.cont_head.outscale) == (1, 1024, 1.0)
    assert (c.actor.layers, c.actor.units, c.actor.outscale, c.actor.min_std, c.actor.max_std) == (3, 1024, 0.01, 0.1, 1.0)
    assert c.actor.entropy == 3e-4 and c.actor.unimix == 0.01
    assert (c.critic.layers, c.critic.units, c.critic.bins, c.critic.outscale) == (3, 1024, 255, 0.0)
    assert (c.critic.slow_rate, c.critic.slow_reg, c.critic.slow_target) == (0.02, 1.0, False)
    # Actor-critic and returns.
    assert (c.imagination.horizon, c.imagination.lam, c.imagination.discount_horizon) == (15, 0.95, 333.0)
    assert dataclasses.asdict(c.retnorm) == dict(rate=0.01, limit=1.0, percentile_low=5.0, percentile_high=95.0)
    # Optimizer (reference: AGC 0.3, floor 1e-3, beta2 0.999, eps 1e-20, beta1 0.9, lr 4e-5, warmup 1000).
    assert dataclasses.asdict(c.optimizer) == dict(lr=4e-5, agc=0.3, pmin=1e-3, beta1=0.9, beta2=0.999, eps=1e-20, warmup=1000)
    # Replay and batching.
    assert (c.batch_size, c.batch_length, c.replay_context) == (16, 64, 1)
    assert c.repval and c.reward_grad
    assert c.actor_grad == "reinforce"  # 2024: REINFORCE for continuous actions too (2023 backpropagated)
    replay = config_lib.ReplayConfig()
    assert (replay.capacity, replay.chunk, replay.online, replay.recency) == (5_000_000, 1024, True, 0.0)


SIZES = {  # reference: Size presets (deter / hidden / classes / CNN depth / MLP units)
    "size1m": (512, 64, 4, 4, 64),
    "size12m": (2048, 256, 16, 16, 256),
    "size25m": (3072, 384, 24, 24, 384),
    "size50m": (4096, 512, 32, 32, 512),
    "size100m": (6144, 768, 48, 48, 768),
    "size200m": (8192, 1024, 64, 64, 1024),
    "size400m": (12288, 1536, 96, 96, 1536),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_size_presets_match_the_reference_table(name):
    config = registry.build_config(SPEC, registry.get_suite("toy"), configs=[name]).agent
    deter, hidden, classes, depth, units = SIZES[name]
    assert (config.rssm.deter, config.rssm.hidden, config.rssm.classes, config.rssm.stoch) == (deter, hidden, classes, 32)
    assert config.encoder.depth == config.decoder.depth == depth
    heads = (config.encoder, config.decoder, config.reward_head, config.cont_head, config.actor, config.critic)
    assert {h.units for h in heads} == {units}


def test_suite_presets_match_upstream_run_settings():
    # reference: Upstream benchmark configs (atari100k and crafter 1 env; DMC with upstream's default 16).
    expected = {"atari100k": (256, 1), "crafter": (512, 1), "dmc_vision": (256, 16), "dmc_proprio": (1024, 16)}
    for suite, (ratio, envs) in expected.items():
        config = registry.build_config(SPEC, registry.get_suite(suite))
        assert (config.run.train_ratio, config.run.envs) == (ratio, envs), suite
    proprio = registry.build_config(SPEC, registry.get_suite("dmc_proprio")).agent
    assert (proprio.rssm.deter, proprio.rssm.hidden, proprio.rssm.classes, proprio.actor.units) == (512, 64, 4, 64)
