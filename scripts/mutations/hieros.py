"""Hieros: one-line bugs in its own math that a default test must catch (scripts/mutation_check.py).

S5 discretisation, scan and initialisation, the S5WM's time alignment and deterministic feature, the subgoal
reward and the level clocks, the REINFORCE stop-gradient and the ETBS replay law. Reference:
/work/shared/reference/hieros_s5.md. The older Hieros tests let five of them pass (s5-dt-max, s5wm-deter-abs,
prev-action, subgoal-time, advantage-sg); tests/test_hieros_faithful.py catches those, with float64 numpy
golden values from the reference's formulas.
"""

S5 = "tests/test_hieros_s5.py::"
S5WM = "tests/test_hieros_s5wm.py::"
AGENT = "tests/test_hieros_agent.py::"
ETBS = "tests/test_hieros_etbs.py::"
FAITHFUL = "tests/test_hieros_faithful.py::"
STEP_RANGE = FAITHFUL + "test_world_model_s5_layers_start_with_zoh_steps_log_uniform_in_0001_to_01"
DETER = FAITHFUL + "test_deterministic_feature_is_symlog_of_a_linear_map_of_the_real_parts_of_all_states"
ACTION_PAIRING = (FAITHFUL
                  + "test_replayed_step_pairs_z_before_with_the_action_taken_after_the_previous_observation")
SUBGOAL_TIME = FAITHFUL + "test_imagined_subgoal_reward_is_the_max_cosine_of_the_entered_state"
REINFORCE = FAITHFUL + "test_policy_loss_sends_no_gradient_to_the_critics"
SHARDED_LEVEL1 = "tests/test_batch_shards_streams.py::test_two_shards_compute_the_one_device_update[hieros-level1]"
SHARDED_ROWS = "tests/test_batch_shards.py::test_each_shard_splits_its_rows_keys_and_draws_plainly_inside_a_row"

MUTATIONS = [
    dict(
        name='s5-zoh-lambda',
        bug='ZOH Lambda_bar = 1 + Lambda dt (forward Euler) instead of exp(Lambda dt)',
        path='agents/hieros/s5.py',
        old='lambda_bar = jnp.exp(lam_dt)',
        new='lambda_bar = 1.0 + lam_dt',
        tests=[S5 + "test_zoh_matches_matrix_exponential"],
    ),
    dict(
        name='s5-zoh-b',
        bug='ZOH B_bar = dt B~ (Euler) instead of (Lambda_bar - 1) / Lambda B~',
        path='agents/hieros/s5.py',
        old='return lambda_bar, ((lambda_bar - 1.0) / lam)[:, None] * b_tilde',
        new='return lambda_bar, step.astype(lam.dtype)[:, None] * b_tilde',
        tests=[S5 + "test_zoh_matches_matrix_exponential"],
    ),
    dict(
        name='s5-reset-flag',
        bug='scan operator keeps only the right reset flag (r_j instead of max(r_i, r_j))',
        path='agents/hieros/s5.py',
        old='return a, b, r_i | r_j',
        new='return a, b, r_j',
        tests=[S5 + "test_parallel_scan_equals_loop_and_recurrent_step"],
    ),
    dict(
        name='s5-dt-max',
        bug="S5WM layers' initial step sizes up to 1.0 instead of the reference's dt in [0.001, 0.1]",
        path='agents/hieros/s5wm.py',
        old='dt_min: float = 0.001, dt_max: float = 0.1, key: PRNGKeyArray):',
        new='dt_min: float = 0.001, dt_max: float = 1.0, key: PRNGKeyArray):',
        tests=[STEP_RANGE],
    ),
    dict(
        name='s5wm-deter-abs',
        bug='deterministic feature reads abs(x) of the S5 states instead of Re(x)',
        path='agents/hieros/s5wm.py',
        old='return dists.symlog(self.state_out(jnp.real(states).reshape(-1)))',
        new='return dists.symlog(self.state_out(jnp.abs(states).reshape(-1)))',
        tests=[DETER],
    ),
    dict(
        name='s5wm-unshifted-z',
        bug='the prior at t reads z_t instead of z_{t-1} (latents not shifted right)',
        path='agents/hieros/s5wm.py',
        old='prev_stoch = jnp.concatenate([carry["stoch"][None], stoch[:-1]])',
        new='prev_stoch = stoch',
        tests=[S5WM + "test_time_alignment_of_posterior_and_prior"],
    ),
    dict(
        name='prev-action',
        bug="replayed z_{t-1} paired with a_t, the action taken after o_t (upstream's off-by-one)",
        path='agents/hieros/agent.py',
        old='prev_actions = jnp.concatenate([jnp.zeros_like(actions[:, :1]), actions[:, :-1]], 1)',
        new='prev_actions = actions',
        tests=[ACTION_PAIRING],
    ),
    dict(
        name='subgoal-cosine',
        bug='subgoal reward with the plain cosine g.s / (norm(g) norm(s)), not g.s / max(norm(g), norm(s))^2',
        path='agents/hieros/hierarchy.py',
        old='return jnp.sum(goal * state, -1) / jnp.maximum(jnp.square(norm), COSINE_EPS)',
        new='return jnp.sum(goal * state, -1) / jnp.maximum(jnp.linalg.norm(goal, axis=-1) '
            '* jnp.linalg.norm(state, axis=-1), COSINE_EPS)',
        tests=[AGENT + "test_subgoal_reward_by_hand"],
    ),
    dict(
        name='subgoal-time',
        bug='imagined subgoal reward of step t read at state t-1 instead of the entered state t',
        path='agents/hieros/hierarchy.py',
        old='rewards["subgoal"] = pad(subgoal_reward(target[:, None], deters[:, 1:]))',
        new='rewards["subgoal"] = pad(subgoal_reward(target[:, None], deters[:, :-1]))',
        tests=[SUBGOAL_TIME],
    ),
    dict(
        name='advantage-sg',
        bug='stop-gradient missing on the REINFORCE advantage (the policy loss trains the critics)',
        path='agents/hieros/hierarchy.py',
        old='policy_loss = weight * -(log_prob * sg(advantage) + config.actor.entropy * entropy)',
        new='policy_loss = weight * -(log_prob * advantage + config.actor.entropy * entropy)',
        tests=[REINFORCE],
    ),
    dict(
        name='etbs-n',
        bug='ETBS multiplies F(u) by n = N + 2 instead of the stored count N',
        path='agents/hieros/etbs.py',
        old='balanced = np.minimum(balanced_cdf(u, count) * count, count - 1)',
        new='balanced = np.minimum(balanced_cdf(u, count) * (count + 2), count - 1)',
        tests=[ETBS + "test_documented_cdf_matches_the_grid"],
    ),
    dict(
        name='level-period',
        bug='level i acts every 5^i env steps instead of 4^i (subgoal horizon off by one)',
        path='agents/hieros/agent.py',
        old='due = [counter % (period**level) == 0 for level in range(self.levels)]',
        new='due = [counter % ((period + 1) ** level) == 0 for level in range(self.levels)]',
        tests=[AGENT + "test_level_i_acts_every_4_to_the_i_env_steps"],
    ),
    dict(
        name='shards-filter-keys',
        bug='batch shards: each part splits the filtering keys for its own rows (the rows get other keys)',
        path='agents/hieros/hierarchy.py',
        old='tokens, data.prev_actions, data.is_first, shards.split(key, data.is_first.shape[0])',
        new='tokens, data.prev_actions, data.is_first, jax.random.split(key, data.is_first.shape[0])',
        tests=[SHARDED_LEVEL1],
    ),
    dict(
        name='shards-filter-row-draws',
        bug='batch shards: the filtering\'s per-row samples drawn as batch draws (over the latent\'s axis)',
        path='agents/hieros/hierarchy.py',
        old='jax.vmap(shards.per_row(lambda t, a, f, k: world.observe(initial, t, a, f, key=k)))',
        new='jax.vmap(lambda t, a, f, k: world.observe(initial, t, a, f, key=k))',
        tests=[SHARDED_LEVEL1],
    ),
    dict(
        name='shards-imagine-keys',
        bug='batch shards: each part splits the imagined steps\' keys for its own rows',
        path='agents/hieros/hierarchy.py',
        old='keys = shards.split(world_key, action.shape[0])',
        new='keys = jax.random.split(world_key, action.shape[0])',
        tests=[SHARDED_LEVEL1],
    ),
    dict(
        name='shards-imagine-row-draws',
        bug='batch shards: the imagined steps\' per-row samples drawn as batch draws (over the latent\'s axis)',
        path='agents/hieros/hierarchy.py',
        old='jax.vmap(shards.per_row(lambda c, a, k: world.imagine_step(c, a, key=k)))(wm, action, keys)',
        new='jax.vmap(lambda c, a, k: world.imagine_step(c, a, key=k))(wm, action, keys)',
        tests=[SHARDED_LEVEL1],
    ),
    dict(
        name='shards-goal-row-draws',
        bug='batch shards: the goal autoencoder\'s per-row samples drawn as batch draws (over the code\'s axis)',
        path='agents/hieros/hierarchy.py',
        old='goal_loss = jax.vmap(jax.vmap(shards.per_row(nets.goal.loss)))(deters, keys)',
        new='goal_loss = jax.vmap(jax.vmap(nets.goal.loss))(deters, keys)',
        tests=[SHARDED_LEVEL1],
    ),
    dict(
        name='shards-goal-keys',
        bug='batch shards: each part splits the goal autoencoder\'s keys for its own rows',
        path='agents/hieros/hierarchy.py',
        old='keys = shards.split(goal_key, deters.shape[:2])',
        new='keys = jax.random.split(goal_key, deters.shape[:2])',
        tests=[SHARDED_LEVEL1],
    ),
    dict(
        name='shards-grads-per-part',
        bug='batch shards: each part steps with its own gradient, not the parts\' mean',
        path='agents/hieros/agent.py',
        old='grads, total, metrics, weighted = shards.mean((grads, total, metrics, weighted))',
        new='total, metrics, weighted = shards.mean((total, metrics, weighted))',
        tests=[SHARDED_LEVEL1],
    ),
    dict(
        name='shards-split-per-part',
        bug='batch shards: `shards.split` splits the key for this part\'s rows alone',
        path='agents/common/shards.py',
        old='return draw(lambda k, whole: jax.random.split(k, whole), key, shape)',
        new='return jax.random.split(key, shape)',
        tests=[SHARDED_ROWS, SHARDED_LEVEL1],
    ),
    dict(
        name='shards-per-row-batch-draws',
        bug='batch shards: `shards.per_row` leaves the row\'s draws as batch draws',
        path='agents/common/shards.py',
        old='token = _PARTS.set(1)',
        new='token = _PARTS.set(_PARTS.get())',
        tests=[SHARDED_ROWS, SHARDED_LEVEL1],
    ),
]
