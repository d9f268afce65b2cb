"""Plan2Explore: one-line bugs of the exploration math that a default test must catch
(scripts/mutation_check.py).

Plan2Explore (Sekar et al., ICML 2020): the intrinsic reward is the disagreement D(s, a) = mean_d Var_k f_k(s,
a)_d (unbiased, 1/(K-1)) of K one-step models f_k, each regressing the NEXT latent from [features_t, a_t] with
inputs and targets stop-gradiented; the reward for entering imagined step i is intr_scale * D(s_{i-1},
a_{i-1}) (+ extr_scale * r_hat), intr_scale 1 and extr_scale 0 as upstream (agents/p2e/config.py).
/work/shared/reference/ names Plan2Explore only as a protocol and a score row. The bugs that the earlier tests
let pass are caught by tests/test_p2e_faithful.py.
"""

P2E = "tests/test_p2e.py::"
FAITHFUL = "tests/test_p2e_faithful.py::"
VARIANCE = P2E + "test_disagreement_equals_the_ensemble_variance_by_hand"
REGRESSION = P2E + "test_ensemble_regresses_the_next_target_and_skips_episode_starts"
REWARD = P2E + "test_exploration_reward_is_the_disagreement_of_the_transition_into_each_step"
NO_WORLD_MODEL_GRADIENT = FAITHFUL + "test_ensemble_loss_sends_no_gradient_to_the_world_model"
DEFAULT_REWARD = FAITHFUL + "test_default_exploration_reward_is_the_disagreement_alone"

MUTATIONS = [
    dict(
        name='disag-mean',
        bug='disagreement is the ensemble mean instead of its variance',
        path='agents/p2e/agent.py',
        old='return jnp.var(offsets, axis=0, ddof=1).mean(-1)',
        new='return predictions.mean(0).mean(-1)',
        tests=[VARIANCE, REWARD],
    ),
    dict(
        name='disag-biased',
        bug='disagreement uses the biased 1/K variance instead of 1/(K-1)',
        path='agents/p2e/agent.py',
        old='return jnp.var(offsets, axis=0, ddof=1).mean(-1)',
        new='return jnp.var(offsets, axis=0, ddof=0).mean(-1)',
        tests=[VARIANCE, REWARD],
    ),
    dict(
        name='target-now',
        bug='ensemble regresses the current latent (t) instead of the next one (t+1)',
        path='agents/p2e/agent.py',
        old='error = jnp.square(predictions - sg(targets[:, 1:, None])).sum((-2, -1))',
        new='error = jnp.square(predictions - sg(targets[:, :-1, None])).sum((-2, -1))',
        tests=[REGRESSION],
    ),
    dict(
        name='target-gradient',
        bug='ensemble target not stop-gradiented: the regression pulls the world model\'s latents',
        path='agents/p2e/agent.py',
        old='error = jnp.square(predictions - sg(targets[:, 1:, None])).sum((-2, -1))',
        new='error = jnp.square(predictions - targets[:, 1:, None]).sum((-2, -1))',
        tests=[NO_WORLD_MODEL_GRADIENT],
    ),
    dict(
        name='input-gradient',
        bug='ensemble inputs not stop-gradiented: the regression reaches the world model\'s features',
        path='agents/p2e/agent.py',
        old='inputs = sg(jnp.concatenate([features[:, :-1], actions[:, :-1]], -1))',
        new='inputs = jnp.concatenate([features[:, :-1], actions[:, :-1]], -1)',
        tests=[NO_WORLD_MODEL_GRADIENT],
    ),
    dict(
        name='intr-scale-ignored',
        bug='intrinsic reward scale not applied',
        path='agents/p2e/agent.py',
        old='reward = intr_scale * intrinsic + extr_scale * extrinsic',
        new='reward = intrinsic + extr_scale * extrinsic',
        tests=[REWARD],
    ),
    dict(
        name='intr-scale-default',
        bug='default intrinsic reward scale 0.1 instead of upstream\'s 1',
        path='agents/p2e/config.py',
        old='intr_scale: float = ranged(1.0, ge=0)',
        new='intr_scale: float = ranged(0.1, ge=0)',
        tests=[DEFAULT_REWARD],
    ),
    dict(
        name='reward-next-state',
        bug='exploration reward of step i is the disagreement of the transition out of s_i, not into it',
        path='agents/p2e/agent.py',
        old='transitions = jnp.concatenate([features[:, :-1], actions], -1)',
        new='transitions = jnp.concatenate([features[:, 1:], actions], -1)',
        tests=[REWARD],
    ),
    dict(
        name='shards-expl-grads-per-part',
        bug='batch shards: each part steps the exploration networks with its own gradient, not the parts\' mean',
        path='agents/p2e/agent.py',
        old='        grads, total, expl_metrics, means = shards.mean((grads, total, expl_metrics, means))\n',
        new='',
        tests=["tests/test_batch_shards.py::test_two_shards_compute_the_one_device_update[p2e]"],
    ),
]
