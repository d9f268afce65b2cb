"""VSG and SVSG: one-line bugs of the sparsely gated dynamics that a default test must catch
(scripts/mutation_check.py).

Reference: /work/shared/reference/vsg_bbs.md: gate g ~ Bern(sigmoid(u - 1)) straight-through
(sample + p - sg(p)); h_t = g * h_hat + (1 - g) * h_{t-1}; prior from h_t and posterior from [h_t; embed];
gate KL max(mean_{B,T} sum_d KL(Bern(p_d) || Bern(0.4)), 0.1); SVSG: std = 2 sigmoid(s / 2) + 0.1 and the
masked KL sum_d g_d KL_d with DreamerV3's dyn / rep stop-gradients. The bugs that the earlier tests let
pass are caught by tests/test_vsg_faithful.py.
"""

GATE = "tests/test_vsg_gate.py::"
DYNAMICS = "tests/test_vsg_dynamics.py::"
FAITHFUL = "tests/test_vsg_faithful.py::"
POSTERIOR_NEW_STATE = FAITHFUL + "test_vsg_posterior_reads_the_new_deterministic_state"
PRIOR_NEW_STATE = FAITHFUL + "test_vsg_imagined_prior_reads_the_new_deterministic_state"
DYN_REP = FAITHFUL + "test_svsg_dyn_trains_the_prior_rep_the_posterior_and_both_reach_the_gate"
MASKED_KL = FAITHFUL + "test_masked_kl_gradient_reaches_the_straight_through_gate"
SVSG_STD = FAITHFUL + "test_svsg_std_is_two_sigmoid_half_plus_min_std"
SHARDS = "tests/test_batch_shards.py::"

MUTATIONS = [
    dict(
        name='st-logits',
        bug='straight-through gradient sent to the gate logits instead of the probability',
        path='agents/vsg/gate.py',
        old='return sample + (probs - jax.lax.stop_gradient(probs))',
        new='return sample + (logits - jax.lax.stop_gradient(logits))',
        tests=[GATE + "test_gate_forward_is_binary_and_gradient_reaches_probability"],
    ),
    dict(
        name='gate-free-per-step',
        bug='gate-KL free bits applied per step instead of to the batch mean',
        path='agents/vsg/gate.py',
        old='return jnp.maximum(shards.mean(per_step.mean()), free), per_step',
        new='return jnp.maximum(per_step, free).mean(), per_step',
        tests=[GATE + "test_gate_kl_sums_dimensions_averages_steps_and_applies_free_bits"],
    ),
    dict(
        name='gate-prior',
        bug='VSG gate prior (sparsity target) 0.5 instead of the paper\'s 0.4',
        path='agents/vsg/agent.py',
        old='gate_prior: float = 0.4  # Bernoulli prior of the gate KL (the paper\'s default)',
        new='gate_prior: float = 0.5  # Bernoulli prior of the gate KL (the paper\'s default)',
        tests=["tests/test_vsg_agent.py::test_gate_settings_are_config_with_the_paper_defaults"],
    ),
    dict(
        name='gated-update-swapped',
        bug='gated update mixes old and new state the wrong way round: g * h_{t-1} + (1 - g) * h_hat',
        path='agents/vsg/dynamics.py',
        old='return gate * candidate + (1.0 - gate) * state',
        new='return gate * state + (1.0 - gate) * candidate',
        tests=[DYNAMICS + "test_vsg_all_gates_closed_carries_the_deterministic_state",
               DYNAMICS + "test_vsg_all_gates_open_gives_the_gru_candidate"],
    ),
    dict(
        name='posterior-old-state',
        bug='VSG posterior reads h_{t-1} instead of h_t',
        path='agents/vsg/dynamics.py',
        old='post = jax.vmap(self._post_one)(deter, token)',
        new='post = jax.vmap(self._post_one)(carry["deter"], token)',
        tests=[POSTERIOR_NEW_STATE],
    ),
    dict(
        name='imagined-prior-old-state',
        bug='VSG prior in imagination reads h_{t-1} instead of h_t',
        path='agents/vsg/dynamics.py',
        old='prior = jax.vmap(self._prior_one)(deter)',
        new='prior = jax.vmap(self._prior_one)(latent["deter"])',
        tests=[PRIOR_NEW_STATE],
    ),
    dict(
        name='svsg-dyn-rep-swapped',
        bug='SVSG dyn / rep stop-gradients swapped',
        path='agents/vsg/dynamics.py',
        old='        dyn = gate_lib.masked_kl(gate_lib.gaussian_kl(*map(sg, post), *prior), gate)\n'
            '        rep = gate_lib.masked_kl(gate_lib.gaussian_kl(*post, *map(sg, prior)), gate)\n',
        new='        dyn = gate_lib.masked_kl(gate_lib.gaussian_kl(*post, *map(sg, prior)), gate)\n'
            '        rep = gate_lib.masked_kl(gate_lib.gaussian_kl(*map(sg, post), *prior), gate)\n',
        tests=[DYN_REP],
    ),
    dict(
        name='masked-kl-no-gate-gradient',
        bug='SVSG masked KL stops the gradient of the straight-through gate',
        path='agents/vsg/gate.py',
        old='return (gate * kl).sum(-1)',
        new='return (jax.lax.stop_gradient(gate) * kl).sum(-1)',
        tests=[MASKED_KL, DYN_REP],
    ),
    dict(
        name='svsg-std',
        bug='SVSG std 2 sigmoid(s) + 0.1 instead of 2 sigmoid(s / 2) + 0.1',
        path='agents/vsg/dynamics.py',
        old='return mean, 2.0 * jax.nn.sigmoid(std / 2.0) + self.min_std',
        new='return mean, 2.0 * jax.nn.sigmoid(std) + self.min_std',
        tests=[SVSG_STD],
    ),
    dict(
        name='shards-gate-own-draw',
        bug='batch shards: every part draws its gates at its own shape (the same numbers on every part)',
        path='agents/vsg/gate.py',
        old='    noise = shards.draw(jax.random.uniform, key, probs.shape, probs.dtype)\n',
        new='    noise = jax.random.uniform(key, probs.shape, probs.dtype)\n',
        tests=[SHARDS + "test_two_shards_compute_the_one_device_update"],
    ),
    dict(
        name='shards-gate-free-bits-per-part',
        bug='batch shards: the gate free bits clip each part\'s mean, not the whole batch\'s',
        path='agents/vsg/gate.py',
        old='return jnp.maximum(shards.mean(per_step.mean()), free), per_step',
        new='return jnp.maximum(per_step.mean(), free), per_step',
        tests=[SHARDS + "test_the_gate_free_bits_clip_the_whole_batch_mean"],
    ),
]
