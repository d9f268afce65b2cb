"""THICK against the reference formulas (/work/shared/reference/thick.md), one test per fact that a one-line
bug could break while the other THICK tests stay green (`scripts/mutation_check.py --agent thick` puts each
bug in):

* GateL0RD: the straight-through gradient of the binary gate goes through the ReTanh gate, not the raw
  pre-activation; gate noise (sigma 0.1) stays on when filtering, in imagination and in the coarse step.
* C-RSSM: the GRU and the fine prior read the NEW context c_t, never c_{t-1}.
* THICK Dreamer: G = r_way + gamma^delta (r(s_tau) + cont(s_tau) V(s_tau)) with reward, continue and value
  all read at s_tau = (z_tau, c_tau), the state after the coarse step (heads that depend on the state,
  continue != 1).
* High level: the action KL is KL(q || p) balanced 0.8 towards the prior; the posterior q reads
  [z_t', c_t'], c_tau (the context after the change) and the probabilities of z_{tau-1}.

Golden values are computed here with numpy from those formulas. Network pieces are replaced by probes with
known outputs (zero weights and chosen biases, or linear read-outs) so every expected number is a closed form.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from agents.common import distributions as dists
from agents.common.actions import ActionLayout
from agents.thick import SPEC, ContextRSSM, ThickConfig
from agents.thick.agent import ThickBehaviour, ThickWorldModel
from agents.thick.gatel0rd import GateL0RDCell
from agents.thick.highlevel import HighLevelModel, highlevel_losses
from agents.thick.segments import SegmentTargets, segment_boundaries, segment_targets
from bench import registry, spaces
from tasks import toy

SIGMA = 0.1  # gate noise std (thick.md: GateL0RD cell, sigma = 0.1)
KL_BALANCE = 0.8  # high-level action KL balance towards the prior (TF2 configs.yaml thick_hl_act_kl)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _set_linear(linear, weight, bias):
    """Replace an eqx.nn.Linear's / our Linear's weight and bias (shapes kept)."""
    weight = jnp.broadcast_to(jnp.asarray(weight, jnp.float32), linear.weight.shape)
    return eqx.tree_at(lambda l: (l.weight, l.bias), linear, (weight, jnp.asarray(bias, jnp.float32)))


# ------------------------------------------------------------------------------------------------ GateL0RD


def test_binary_gate_gradient_goes_through_the_retanh_gate():
    # binary = Heaviside(ReTanh(s)), s = b + sigma n: forward 1{s > 0}; the straight-through estimator
    # passes d binary / d ReTanh = 1, so d binary / d b = ReTanh'(s) = 1{s > 0} (1 - tanh(s)^2).
    bias = np.array([-0.5, 0.2, 1.0, 2.0], np.float32)
    noise = np.array([0.3, -1.0, 0.5, 2.0], np.float32)
    scale = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    cell = GateL0RDCell(3, 4, noise=SIGMA, key=jax.random.key(0))

    def weighted_gates(b):
        gate = _set_linear(cell.gate, 0.0, b)
        _, binary = eqx.tree_at(lambda c: c.gate, cell, gate)(jnp.ones(3), jnp.zeros(4), jnp.asarray(noise))
        return (binary * scale).sum(), binary

    grad, binary = jax.grad(weighted_gates, has_aux=True)(jnp.asarray(bias))
    pre = bias + SIGMA * noise
    np.testing.assert_array_equal(binary, (pre > 0).astype(np.float32))
    expected = scale * np.where(pre > 0, 1.0 - np.tanh(pre) ** 2, 0.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def small_crssm(gate_noise=SIGMA, context=4) -> ContextRSSM:
    return ContextRSSM(
        12, 5, deter=16, hidden=8, stoch=3, classes=4, context=context, blocks=2, coarse_layers=1,
        gate_noise=gate_noise, key=jax.random.key(0),
    )  # fmt: skip


def _with_cell(crssm, *, gate_weight, gate_bias, cand_weight, cand_bias):
    cell = crssm.cell
    cell = eqx.tree_at(lambda c: c.gate, cell, _set_linear(cell.gate, gate_weight, gate_bias))
    cell = eqx.tree_at(lambda c: c.candidate, cell, _set_linear(cell.candidate, cand_weight, cand_bias))
    return eqx.tree_at(lambda m: m.cell, crssm, cell)


def _random_latent(batch, rng, context=None):
    latent = {
        "deter": jnp.asarray(rng.normal(size=(batch, 16)), jnp.float32),
        "stoch": jax.nn.one_hot(rng.integers(0, 4, (batch, 3)), 4),
        "context": jnp.zeros((batch, 4), jnp.float32) if context is None else context,
    }
    return latent


def test_gate_noise_is_on_when_filtering_in_imagination_and_in_the_coarse_step():
    # Gate pre-activation = -sigma + sigma n (zero weights, bias -sigma): a context dimension changes iff
    # n > 1, so P(change) = 1 - Phi(1) = 0.1587 with the noise and exactly 0 without it.
    crssm = _with_cell(small_crssm(), gate_weight=0.0, gate_bias=-SIGMA, cand_weight=0.0, cand_bias=1.0)
    batch = 1024
    rng = np.random.default_rng(0)
    latent = _random_latent(batch, rng)
    actions = jax.nn.one_hot(rng.integers(0, 5, batch), 5)
    p_open = 0.5 * (1.0 - float(jax.scipy.special.erf(1.0 / np.sqrt(2.0))))  # 0.1587
    tolerance = 4.0 * np.sqrt(p_open * (1 - p_open) / (batch * 4))

    imagined = eqx.filter_jit(crssm.imagine_step)(latent, actions, key=jax.random.key(1))
    _, context_after, _ = eqx.filter_jit(crssm.coarse_step)(
        latent["stoch"], latent["context"], actions, key=jax.random.key(2)
    )
    tokens = jnp.asarray(rng.normal(size=(batch, 1, 12)), jnp.float32)
    _, posteriors, _ = eqx.filter_jit(crssm.observe)(
        latent, tokens, actions[:, None], jnp.zeros((batch, 1), bool), key=jax.random.key(3)
    )
    for name, context in (
        ("imagine_step", imagined["context"]),
        ("coarse_step", context_after),
        ("observe", posteriors["context"][:, 0]),
    ):
        changed = np.asarray(context) != 0.0
        assert abs(changed.mean() - p_open) < tolerance, (name, changed.mean(), p_open)
        # An open gate moves the context by ReTanh(s) tanh(1) with 0 < s = sigma (n - 1) (n > 1).
        moved = np.asarray(context)[changed]
        assert np.all(moved > 0) and np.all(moved < np.tanh(1.0)), name


# -------------------------------------------------------------------------------------------------- C-RSSM


def test_gru_and_fine_prior_read_the_new_context():
    # With the gate forced open (zero gate weights, bias 100: ReTanh = 1 exactly) and a candidate that ignores
    # the previous context, c_t = tanh(W x + b) does not depend on c_{t-1}. The reference feeds c_t to the GRU
    # (h_t = GRU(h_{t-1}, [x, c_t])) and to the fine prior p(z_t | h_t, c_t), so h_t, the fine prior and the
    # posterior have no gradient with respect to c_{t-1}. With the gate shut (c_t = c_{t-1}) they do.
    base = small_crssm()
    inputs = base.cell.candidate.weight.shape[1] - base.context  # cell input size X (weight is (out, in))
    rng = np.random.default_rng(1)
    cand_weight = np.asarray(base.cell.candidate.weight).copy()
    cand_weight[:, inputs:] = 0.0  # the candidate's columns on c_{t-1}
    cand_bias = rng.normal(size=4).astype(np.float32)
    batch = 3
    latent = _random_latent(batch, rng)
    previous = jnp.asarray(rng.uniform(-0.8, 0.8, (batch, 4)), jnp.float32)
    tokens = jnp.asarray(rng.normal(size=(batch, 1, 12)), jnp.float32)
    actions = jax.nn.one_hot(rng.integers(0, 5, (batch, 1)), 5)
    first = jnp.zeros((batch, 1), bool)
    probe_h = jnp.asarray(rng.normal(size=(batch, 16)), jnp.float32)
    probe_z = jnp.asarray(rng.normal(size=(batch, 3, 4)), jnp.float32)

    @eqx.filter_jit
    def gradients(crssm):
        """d/d c_{t-1} of probe-weighted h_t, fine prior, posterior (filtering) and h_t, z_t (imagination)."""

        def filtered(context, name):
            _, posts, priors = crssm.observe({**latent, "context": context}, tokens, actions, first,
                                             key=jax.random.key(4))  # fmt: skip
            out = {"deter": posts["deter"], "prior": priors["logits"], "post": posts["logits"]}[name][:, 0]
            return (out * (probe_h if name == "deter" else probe_z)).sum()

        def imagined(context, name):
            # The straight-through sample carries d prior probabilities / d input.
            out = crssm.imagine_step({**latent, "context": context}, actions[:, 0], key=jax.random.key(5))
            return (out[name] * (probe_h if name == "deter" else probe_z)).sum()

        grads = {f"filter {n}": jax.grad(filtered)(previous, n) for n in ("deter", "prior", "post")}
        grads.update({f"imagine {n}": jax.grad(imagined)(previous, n) for n in ("deter", "stoch")})
        return grads

    cell = dict(gate_weight=0.0, cand_weight=cand_weight, cand_bias=cand_bias)
    opened = gradients(_with_cell(base, gate_bias=100.0, **cell))
    shut = gradients(_with_cell(base, gate_bias=-100.0, **cell))
    for name in opened:
        np.testing.assert_array_equal(opened[name], 0.0, err_msg=f"{name} reads c_(t-1)")
        # Positive control: through c_t = c_{t-1} the same outputs do depend on the context.
        assert np.abs(shut[name]).max() > 1e-6, name


# ------------------------------------------------------------------------------------------ THICK Dreamer


class TwohotProbe(eqx.Module):
    """Twohot logits whose mean is the linear read-out features @ weight (a head with a known output)."""

    weight: jax.Array
    bins: jax.Array

    def __call__(self, features):
        return jnp.log(dists.twohot_encode(features @ self.weight, self.bins) + 1e-30)


class LogitProbe(eqx.Module):
    """A one-logit head: features @ weight."""

    weight: jax.Array

    def __call__(self, features):
        return (features @ self.weight)[None]


def _twohot_bias(value: float, bins) -> jax.Array:
    """Bias of a zero-weight linear layer whose twohot mean is `value`."""
    return jnp.log(dists.twohot_encode(jnp.float32(value), bins) + 1e-30)


def test_long_horizon_return_reads_reward_continue_and_value_at_s_tau():
    config = registry.build_config(SPEC, toy.SUITE, ["debug"], task="keydoor").agent
    # No uniform mixture, so the probes' near-one-hot categoricals sample their mode.
    config = dataclasses.replace(config, rssm=dataclasses.replace(config.rssm, unimix=0.0))
    obs_space = {"vector": spaces.box((3,)), **spaces.step_spaces()}  # no CNN needed for the arithmetic
    layout = ActionLayout.from_spaces({"action": spaces.discrete(5)})
    model = ThickWorldModel(config, obs_space, layout, 10, key=jax.random.key(0))
    stoch, classes, context = config.rssm.stoch, config.rssm.classes, config.context.size
    coarse_size = stoch * classes + context
    rng = np.random.default_rng(2)

    # High-level step: delta and the reward on the way are fixed (twohot means), z_{tau-1} is `before`.
    delta, way = 4.0, 0.7
    before = rng.integers(0, classes, stoch)
    hl_bins = dists.symexp_bins(config.highlevel.bins)
    hl = model.highlevel
    hl = eqx.tree_at(lambda h: h.time_out, hl, _set_linear(hl.time_out, 0.0, _twohot_bias(delta, hl_bins)))
    hl = eqx.tree_at(lambda h: h.reward_out, hl, _set_linear(hl.reward_out, 0.0, _twohot_bias(way, hl_bins)))
    state_out = _set_linear(hl.state_out, 0.0, 100.0 * jax.nn.one_hot(before, classes).reshape(-1))
    hl = eqx.tree_at(lambda h: h.state_out, hl, state_out)
    # Coarse step: the gate opens (ReTanh = 1) onto the constant candidate tanh(b), and the coarse prior
    # puts z_tau on `after`: s_tau = (after, tanh(b)) for every start state.
    after = (before + 1 + rng.integers(0, classes - 1, stoch)) % classes
    cand_bias = rng.uniform(-1.5, 1.5, context).astype(np.float32)
    crssm = _with_cell(model.crssm, gate_weight=0.0, gate_bias=100.0, cand_weight=0.0, cand_bias=cand_bias)
    coarse_out = _set_linear(crssm.coarse_out, 0.0, 100.0 * jax.nn.one_hot(after, classes).reshape(-1))
    crssm = eqx.tree_at(lambda c: c.coarse_out, crssm, coarse_out)
    # Coarse reward, continue and slow coarse value: different linear functions of [z, c]; the continue
    # logit at s_tau is pinned to 0.4 (continue 0.6, so dropping the factor shows).
    s_tau = np.concatenate([np.eye(classes)[after].reshape(-1), np.tanh(cand_bias)]).astype(np.float32)
    w_reward, w_cont, w_value = (rng.normal(0.0, 0.5, coarse_size).astype(np.float32) for _ in range(3))
    w_cont = w_cont - (s_tau @ w_cont - 0.4) * s_tau / (s_tau @ s_tau)
    coarse = model.coarse
    coarse = eqx.tree_at(lambda c: (c.reward, c.cont), coarse, (
        TwohotProbe(jnp.asarray(w_reward), dists.symexp_bins(config.reward_head.bins)),
        LogitProbe(jnp.asarray(w_cont)),
    ))  # fmt: skip
    value = TwohotProbe(jnp.asarray(w_value), dists.symexp_bins(config.critic.bins))
    model = eqx.tree_at(lambda m: (m.highlevel, m.crssm, m.coarse), model, (hl, crssm, coarse))
    behaviour = ThickBehaviour(config, coarse_size, key=jax.random.key(1))
    slow = eqx.tree_at(lambda b: b.coarse_critic, behaviour, value)  # the slow coarse critic V_slow

    starts = 6
    z_now = rng.integers(0, classes, (starts, stoch))
    c_now = rng.uniform(-1, 1, (starts, context)).astype(np.float32)
    latents = {
        "deter": jnp.asarray(rng.normal(size=(starts, config.rssm.deter)), jnp.float32),
        "stoch": jax.nn.one_hot(z_now, classes),
        "context": jnp.asarray(c_now),
    }
    long_return = eqx.filter_jit(behaviour.long_horizon_return)(slow, model, latents, key=jax.random.key(3))

    # Reference: G = r_way + gamma^delta (r(s_tau) + cont(s_tau) V(s_tau)), gamma = 1 - 1/333.
    gamma = 1.0 - 1.0 / 333.0
    assert config.imagination.discount_horizon == 333.0
    cont_tau = _sigmoid(s_tau @ w_cont)
    expected = way + gamma**delta * (s_tau @ w_reward + cont_tau * (s_tau @ w_value))
    # The test can tell the states and the continue factor apart.
    s_now = np.concatenate([np.eye(classes)[z_now].reshape(starts, -1), c_now], -1)
    assert abs(cont_tau - _sigmoid(0.4)) < 1e-5 and abs(s_tau @ w_value) > 0.1
    assert np.abs(s_now @ w_value - s_tau @ w_value).min() > 0.05
    np.testing.assert_allclose(long_return, np.full(starts, expected), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ high level


def small_highlevel(rng, *, stoch=2, classes=3, context=2, hl_actions=3, bins=31):
    """Linear prior and posterior (layers=0: the MLP trunks are the identity), no uniform mixture."""
    layout = ActionLayout.from_spaces({"action": spaces.discrete(4)})
    model = HighLevelModel(stoch, classes, context, layout, hl_actions=hl_actions, units=8, layers=0,
                           bins=bins, unimix=0.0, key=jax.random.key(int(rng.integers(1 << 30))))  # fmt: skip
    return model, layout


def test_highlevel_action_kl_is_posterior_to_prior_balanced_towards_the_prior():
    rng = np.random.default_rng(3)
    model, layout = small_highlevel(rng)
    b_q, b_p = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    model = eqx.tree_at(lambda m: m.prior.out, model, _set_linear(model.prior.out, 0.0, b_p))
    model = eqx.tree_at(lambda m: m.posterior.out, model, _set_linear(model.posterior.out, 0.0, b_q))
    batch, steps = 2, 3
    mask = np.array([[1, 1, 0], [0, 1, 1]], np.float32)
    targets = SegmentTargets(
        state=jax.nn.log_softmax(jnp.asarray(rng.normal(size=(batch, steps, 2, 3)), jnp.float32)),
        action=jax.nn.one_hot(rng.integers(0, 4, (batch, steps)), 4),
        context=jnp.asarray(rng.normal(size=(batch, steps, 2)), jnp.float32),
        time=jnp.ones((batch, steps)), reward=jnp.zeros((batch, steps)), mask=jnp.asarray(mask),
    )  # fmt: skip
    inputs = jnp.asarray(rng.normal(size=(batch, steps, 2 * 3 + 2)), jnp.float32)
    bins = dists.symexp_bins(31)
    assert ThickConfig().highlevel.kl_balance == KL_BALANCE

    def kl_sum(m):
        losses, _ = highlevel_losses(m, inputs, targets, layout, bins, key=jax.random.key(0),
                                     kl_balance=KL_BALANCE)  # fmt: skip
        return losses["hl_kl"].sum(), losses["hl_kl"]

    grads, hl_kl = eqx.filter_jit(eqx.filter_grad(kl_sum, has_aux=True))(model)
    q, p = _softmax(b_q), _softmax(b_p)
    kl = np.sum(q * (np.log(q) - np.log(p)))  # KL(q || p): posterior to prior
    np.testing.assert_allclose(hl_kl, mask * kl, rtol=1e-5, atol=1e-7)
    # Balance: 0.8 of the gradient trains the prior towards sg(q), 0.2 the posterior towards sg(p).
    # d KL(q || p) / d prior logits = p - q;  d KL(q || p) / d posterior logits = q (log q - log p - KL).
    count = mask.sum()
    np.testing.assert_allclose(grads.prior.out.bias, KL_BALANCE * count * (p - q), rtol=1e-4, atol=1e-6)
    post_grad = (1.0 - KL_BALANCE) * count * q * (np.log(q) - np.log(p) - kl)
    np.testing.assert_allclose(grads.posterior.out.bias, post_grad, rtol=1e-4, atol=1e-6)


def test_highlevel_posterior_reads_the_context_after_and_the_state_before_the_change():
    # q(A | z_t', c_t', c_tau, z_{tau-1}) with a linear posterior: logits = [x_t', c_tau, probs(z_{tau-1})] W.
    rng = np.random.default_rng(4)
    stoch, classes, context, hl_actions = 2, 3, 2, 3
    model, layout = small_highlevel(rng, stoch=stoch, classes=classes, context=context, hl_actions=hl_actions)
    coarse = stoch * classes + context
    w_post = rng.normal(size=(coarse + context + stoch * classes, hl_actions)).astype(np.float32)
    b_p = rng.normal(size=hl_actions).astype(np.float32)
    model = eqx.tree_at(lambda m: m.posterior.out, model, _set_linear(model.posterior.out, w_post, 0.0))
    model = eqx.tree_at(lambda m: m.prior.out, model, _set_linear(model.prior.out, 0.0, b_p))

    steps, tau = 6, 3  # the context changes at step 3 only: inputs t' = 0, 1, 2 target tau = 3
    state_logits = rng.normal(size=(1, steps, stoch, classes)).astype(np.float32)
    state_logp = np.log(_softmax(state_logits))
    contexts = rng.normal(size=(1, steps, context)).astype(np.float32)
    changed = np.zeros((1, steps), np.float32)
    changed[0, tau] = 1.0
    targets = jax.jit(segment_targets, static_argnames="discount")(
        states=jnp.asarray(state_logp), actions=jax.nn.one_hot(jnp.zeros((1, steps), int), 4),
        contexts=jnp.asarray(contexts), rewards=jnp.zeros((1, steps)),
        boundaries=segment_boundaries(jnp.asarray(changed), jnp.zeros((1, steps), bool)),
        is_first=jnp.zeros((1, steps), bool).at[0, 0].set(True), discount=0.9,
    )  # fmt: skip
    inputs = rng.normal(size=(1, steps, coarse)).astype(np.float32)
    losses, _ = eqx.filter_jit(highlevel_losses)(model, jnp.asarray(inputs), targets, layout,
                                                 dists.symexp_bins(31), key=jax.random.key(0),
                                                 kl_balance=KL_BALANCE)  # fmt: skip

    p = _softmax(b_p)
    expected = np.zeros(steps, np.float32)
    for t in range(tau):
        state_before = np.exp(state_logp[0, tau - 1]).reshape(-1)  # probabilities of z_{tau-1}
        features = np.concatenate([inputs[0, t], contexts[0, tau], state_before])
        q = _softmax(features @ w_post)
        expected[t] = np.sum(q * (np.log(q) - np.log(p)))
    np.testing.assert_allclose(losses["hl_kl"][0], expected, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------- presets


def test_minihack_and_pinpad_presets_are_thicks_own_settings():
    # TF2 thick/configs.yaml, `defaults` + `thick_minihack` / `thick_pinpad`: rssm deter = hidden = 256,
    # stoch 32 x discrete 32, cnn_depth 48, reward/discount heads, actor and critic 4 x 400, dataset 16 x 50,
    # train_every 5 (one 16 x 50 batch per 5 policy steps), context 16 with gate noise 0.1, high-level
    # actions 3 (MiniHack) / 5 (pinpad). beta = ctxt_sparsity + 1: 10 + 1, KeyCorridor 1 + 1, pinpad 1 + 1.
    for suite, task, beta, hl_actions in (
        ("minihack", "escaperoom", 11.0, 3),
        ("minihack", "keycorridor8", 2.0, 3),
        ("pinpad", "three", 2.0, 5),
    ):
        resolved = registry.build_config(SPEC, registry.get_suite(suite), (), None, task)
        config = resolved.agent
        rssm = config.rssm
        assert (rssm.deter, rssm.hidden, rssm.stoch, rssm.classes, rssm.blocks) == (256, 256, 32, 32, 1), suite
        assert config.encoder.depth == config.decoder.depth == 48
        for head in (config.reward_head, config.cont_head, config.actor, config.critic):
            assert (head.layers, head.units) == (4, 400), (suite, head)
        assert (config.batch_size, config.batch_length) == (16, 50)
        assert resolved.run.train_ratio == 16 * 50 / 5
        assert (config.context.size, config.context.gate_noise) == (16, SIGMA)
        assert (config.loss_scales.sparse, config.highlevel.actions) == (beta, hl_actions), (suite, task)
