"""THICK: one-line bugs that a default test must catch (scripts/mutation_check.py).

(a)-(e) are the bugs of issue 14 that passed the tests before tests/test_thick_faithful.py; the `hl-*`
mutations check that the high-level tests can fail too. Reference: /work/shared/reference/thick.md.
"""

FAITHFUL = "tests/test_thick_faithful.py::"
LONG_HORIZON = FAITHFUL + "test_long_horizon_return_reads_reward_continue_and_value_at_s_tau"
NEW_CONTEXT = FAITHFUL + "test_gru_and_fine_prior_read_the_new_context"
STRAIGHT_THROUGH = FAITHFUL + "test_binary_gate_gradient_goes_through_the_retanh_gate"
GATE_NOISE = FAITHFUL + "test_gate_noise_is_on_when_filtering_in_imagination_and_in_the_coarse_step"
HL_KL = FAITHFUL + "test_highlevel_action_kl_is_posterior_to_prior_balanced_towards_the_prior"
HL_POSTERIOR = FAITHFUL + "test_highlevel_posterior_reads_the_context_after_and_the_state_before_the_change"
SHARDS = "tests/test_batch_shards.py::"
SHARDED_UPDATE = SHARDS + "test_two_shards_compute_the_one_device_update[thick]"
SHARDED_STEPS = SHARDS + "test_thick_imagination_and_coarse_steps_draw_the_one_device_gate_noise"
SHARDED_HL = SHARDS + "test_thick_high_level_metrics_are_means_over_the_whole_batch_targets"

MUTATIONS = [
    dict(
        name='a',
        bug='long-horizon value V bootstrapped at the current state instead of s_tau',
        path='agents/thick/agent.py',
        old='value_after = jax.vmap(slow.coarse_value)(after)',
        new='value_after = jax.vmap(slow.coarse_value)(dynamics.coarse_features(latents))',
        tests=[LONG_HORIZON],
    ),
    dict(
        name='b',
        bug='continue factor dropped from the long-horizon value',
        path='agents/thick/agent.py',
        old='(reward_after + cont_after * value_after)',
        new='(reward_after + value_after)',
        tests=[LONG_HORIZON],
    ),
    dict(
        name='c-gru',
        bug='GRU reads the old context c_{t-1} (cell and GRU lines swapped)',
        path='agents/thick/crssm.py',
        old="        context, gates = self.cell(x, context, noise)\n"
            "        deter = self.core(deter, jnp.concatenate([stoch.reshape(-1), context]), action)\n",
        new="        deter = self.core(deter, jnp.concatenate([stoch.reshape(-1), context]), action)\n"
            "        context, gates = self.cell(x, context, noise)\n",
        tests=[NEW_CONTEXT],
    ),
    dict(
        name='c-prior-filter',
        bug='fine prior reads c_{t-1} when filtering',
        path='agents/thick/crssm.py',
        old='priors = over_time(self._prior_one)(states["deter"], states["context"])',
        new='priors = over_time(self._prior_one)(states["deter"], '
            'jnp.concatenate([latent["context"][:, None], states["context"][:, :-1]], 1))',
        tests=[NEW_CONTEXT],
    ),
    dict(
        name='c-prior-imagine',
        bug='fine prior reads c_{t-1} in imagination',
        path='agents/thick/crssm.py',
        old='prior = jax.vmap(self._prior_one)(deter, context)',
        new='prior = jax.vmap(self._prior_one)(deter, latent["context"])',
        tests=[NEW_CONTEXT],
    ),
    dict(
        name='d',
        bug='straight-through gradient sent to the gate pre-activation instead of the ReTanh output',
        path='agents/thick/gatel0rd.py',
        old='return new_context, heaviside_straight_through(gate)',
        new='return new_context, heaviside_straight_through(pre_gate)',
        tests=[STRAIGHT_THROUGH],
    ),
    dict(
        name='e',
        bug='gate noise off in imagination',
        path='agents/thick/crssm.py',
        old='noise = shards.draw(jax.random.normal, noise_key, (batch, self.context), jnp.float32)',
        new='noise = jnp.zeros((batch, self.context), jnp.float32)',
        anchor='def imagine_step',
        tests=[GATE_NOISE],
    ),
    dict(
        name='e-coarse',
        bug='gate noise off in the coarse step of high-level rollouts',
        path='agents/thick/crssm.py',
        old='noise = shards.draw(jax.random.normal, noise_key, (batch, self.context), jnp.float32)',
        new='noise = jnp.zeros((batch, self.context), jnp.float32)',
        anchor='def coarse_step',
        tests=[GATE_NOISE],
    ),
    dict(
        name='hl-kl-direction',
        bug='high-level action KL as KL(prior || posterior)',
        path='agents/thick/highlevel.py',
        old='kl_to_prior = dists.categorical_kl(sg(post), prior)',
        new='kl_to_prior = dists.categorical_kl(prior, sg(post))',
        tests=[HL_KL],
    ),
    dict(
        name='hl-kl-balance',
        bug='high-level action KL balance swapped (0.2 towards the prior)',
        path='agents/thick/highlevel.py',
        old='kl = kl_balance * kl_to_prior + (1.0 - kl_balance) * kl_to_post',
        new='kl = (1.0 - kl_balance) * kl_to_prior + kl_balance * kl_to_post',
        tests=[HL_KL],
    ),
    dict(
        name='hl-post-state',
        bug='high-level posterior reads the log-probabilities of z_{tau-1} as probabilities',
        path='agents/thick/highlevel.py',
        old='inputs = jnp.concatenate([x, context_after, jnp.exp(state_before).reshape(-1)])',
        new='inputs = jnp.concatenate([x, context_after, state_before.reshape(-1)])',
        tests=[HL_POSTERIOR],
    ),
    dict(
        name='hl-post-context',
        bug='segment targets carry c_{tau-1} instead of c_tau',
        path='agents/thick/segments.py',
        old='next_context = shift_left(contexts, 0.0)',
        new='next_context = contexts',
        tests=[HL_POSTERIOR],
    ),
    dict(
        name='shards-gate-noise-time-axis',
        bug='batch shards: the filtering gate noise (time-major) split along time instead of the batch',
        path='agents/thick/crssm.py',
        old='(steps, batch, self.context), jnp.float32, axis=1)',
        new='(steps, batch, self.context), jnp.float32)',
        tests=[SHARDED_UPDATE],
    ),
    dict(
        name='shards-coarse-step-own-draw',
        bug='batch shards: every part draws the coarse step\'s gate noise at its own shape (the same numbers)',
        path='agents/thick/crssm.py',
        old='noise = shards.draw(jax.random.normal, noise_key, (batch, self.context), jnp.float32)',
        new='noise = jax.random.normal(noise_key, (batch, self.context), jnp.float32)',
        anchor='def coarse_step',
        tests=[SHARDED_STEPS],
    ),
    dict(
        name='shards-imagine-own-draw',
        bug='batch shards: every part draws the imagination\'s gate noise at its own shape (the same numbers)',
        path='agents/thick/crssm.py',
        old='noise = shards.draw(jax.random.normal, noise_key, (batch, self.context), jnp.float32)',
        new='noise = jax.random.normal(noise_key, (batch, self.context), jnp.float32)',
        anchor='def imagine_step',
        tests=[SHARDED_STEPS],
    ),
    dict(
        name='shards-hl-metric-per-part',
        bug='batch shards: the high-level metrics averaged over each part\'s own targets, not the whole batch\'s',
        path='agents/common/shards.py',
        old='totals, count = mean((',
        new='totals, count = ((',
        tests=[SHARDED_HL],
    ),
]
