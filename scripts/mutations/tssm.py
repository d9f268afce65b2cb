"""TSSM: one-line bugs of the transformer latent dynamics that a default test must catch
(scripts/mutation_check.py).

Reference: /work/shared/reference/transformer_wm.md (TSSM section): causal mask over the (z, a, r) tokens,
relative position logits q.k / sqrt(d) + q.E_r[i - j], the a-token output predicts z_t, the r-token output
predicts the (symlog) reward, and the KV-window imagination equals the full causal pass. The bugs that the
earlier tests let pass are caught by tests/test_tssm_faithful.py.
"""

TSSM = "tests/test_tssm.py::"
FAITHFUL = "tests/test_tssm_faithful.py::"
VISIBILITY = TSSM + "test_visibility_by_hand"
CAUSAL = TSSM + "test_full_pass_is_causal"
BLOCK = TSSM + "test_block_relative_position_logits_by_hand"
KV_WINDOW = TSSM + "test_kv_window_imagination_equals_full_causal_pass"
SYMLOG = FAITHFUL + "test_observed_reward_enters_the_model_as_symlog"
TOKREW = FAITHFUL + "test_reward_token_loss_is_half_squared_error_against_the_stopped_target"
NEW_EPISODE = FAITHFUL + "test_a_new_episode_sees_nothing_of_the_previous_one"

MUTATIONS = [
    dict(
        name='causal-next',
        bug='causal mask lets a token see the next token',
        path='agents/tssm/transformer.py',
        old='return (key <= query) & (query - key <= slots)',
        new='return (key <= query + 1) & (query - key <= slots)',
        tests=[VISIBILITY, CAUSAL],
    ),
    dict(
        name='rel-distance',
        bug='relative position table indexed one distance too far (i - j + 1)',
        path='agents/tssm/transformer.py',
        old='distance = slots + jnp.arange(n)[:, None] - jnp.arange(slots + n)[None, :]',
        new='distance = slots + 1 + jnp.arange(n)[:, None] - jnp.arange(slots + n)[None, :]',
        tests=[BLOCK],
    ),
    dict(
        name='attn-scale',
        bug='attention logits scaled by 1/d instead of 1/sqrt(d)',
        path='agents/tssm/transformer.py',
        old='content = jnp.einsum("qhd,khd->hqk", q, keys) / jnp.sqrt(head_dim)',
        new='content = jnp.einsum("qhd,khd->hqk", q, keys) / head_dim',
        tests=[BLOCK],
    ),
    dict(
        name='prior-token',
        bug='prior of z_t read from the z_t token output (sees its own target) instead of the a_{t-1} token',
        path='agents/tssm/dynamics.py',
        old='prior = jax.vmap(self._prior_one)(out[:, 0])',
        new='prior = jax.vmap(self._prior_one)(out[:, 2])',
        tests=[CAUSAL, KV_WINDOW],
    ),
    dict(
        name='reward-unshifted',
        bug='the reward token of step t carries r_t (the target of its head) instead of r_{t-1}',
        path='agents/tssm/dynamics.py',
        old='prev_reward = jnp.concatenate([latent["reward"][:, None], reward[:, :-1]], 1) * keep',
        new='prev_reward = reward * keep',
        tests=[KV_WINDOW, NEW_EPISODE],
    ),
    dict(
        name='reward-reset',
        bug='the first chunk of an episode carries the last reward of the previous episode',
        path='agents/tssm/dynamics.py',
        old='prev_reward = jnp.concatenate([latent["reward"][:, None], reward[:, :-1]], 1) * keep',
        new='prev_reward = jnp.concatenate([latent["reward"][:, None], reward[:, :-1]], 1)',
        tests=[KV_WINDOW, NEW_EPISODE],
    ),
    dict(
        name='reward-symlog',
        bug='observed reward enters the model raw instead of symlog',
        path='agents/tssm/dynamics.py',
        old='sensor_tokens, reward = tokens[..., :-1], dists.symlog(tokens[..., -1])',
        new='sensor_tokens, reward = tokens[..., :-1], tokens[..., -1]',
        tests=[KV_WINDOW, SYMLOG],
    ),
    dict(
        name='tokrew-scale',
        bug='reward-token loss is the squared error, not the unit-variance Gaussian NLL 0.5 * error^2',
        path='agents/tssm/dynamics.py',
        old='losses["tokrew"] = 0.5 * jnp.square(priors["reward"] - sg(posteriors["reward"]))',
        new='losses["tokrew"] = jnp.square(priors["reward"] - sg(posteriors["reward"]))',
        tests=[TOKREW],
    ),
]
