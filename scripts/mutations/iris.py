"""IRIS: one-line bugs in its own math that a default test must catch (scripts/mutation_check.py).

One per fact of /work/shared/reference/transformer_wm.md (IRIS section) that a slip could break: the VQ
straight-through estimator and losses, the GPT's causal mask and token layout, next-token targets, where the
reward is read, the lambda returns, the entropy bonus, the discount and the imagination horizon. The tests
that catch the ones the older tests let pass are in tests/test_iris_faithful.py (numpy golden values).
"""

TOKENIZER = "tests/test_iris_tokenizer.py::"
TRANSFORMER = "tests/test_iris_transformer.py::"
AGENT = "tests/test_iris_agent.py::"
FAITHFUL = "tests/test_iris_faithful.py::"
STRAIGHT_THROUGH = FAITHFUL + "test_reconstruction_gradient_reaches_the_encoder_straight_through"
TOKENIZER_LOSS = FAITHFUL + "test_agent_tokenizer_loss_is_l1_perceptual_and_vq_with_beta_one"
MINGPT = FAITHFUL + "test_gpt_matches_a_numpy_mingpt_over_frame_and_action_blocks"
ACTOR_CRITIC_LOSS = FAITHFUL + "test_actor_critic_loss_matches_iris_formulas_at_iris_constants"
IMAGINATION = FAITHFUL + "test_imagination_runs_horizon_policy_steps_after_burn_in_from_the_start_frame"
SHARDS = "tests/test_batch_shards_streams.py::test_two_shards_compute_the_one_device_update"
SHARDED_TOKENIZER = SHARDS + "[iris-tokenizer]"
SHARDED_WORLD_MODEL = SHARDS + "[iris-world-model]"
SHARDED_ACTOR_CRITIC = SHARDS + "[iris-actor-critic]"

MUTATIONS = [
    dict(
        name='st-decoder-reads-quantised',
        bug='decoder reads the codebook entries, not z + sg(e - z): reconstruction trains no encoder',
        path='agents/iris/tokenizer.py',
        old='decoder_in = jnp.where(warmup, flat, straight_through(flat, z_q)).reshape(z.shape)',
        new='decoder_in = jnp.where(warmup, flat, z_q).reshape(z.shape)',
        tests=[STRAIGHT_THROUGH],
    ),
    dict(
        name='vq-stop-gradients-swapped',
        bug='codebook and commitment stop-gradients swapped (beta weighs the codebook term)',
        path='agents/iris/tokenizer.py',
        old='return jnp.mean((sg(z) - z_q) ** 2) + beta * jnp.mean((z - sg(z_q)) ** 2)',
        new='return jnp.mean((z - sg(z_q)) ** 2) + beta * jnp.mean((sg(z) - z_q) ** 2)',
        tests=[TOKENIZER + "test_quantize_and_vq_losses_by_hand"],
    ),
    dict(
        name='commitment-weight',
        bug='commitment weight beta 0.25 (VQ-VAE paper) instead of IRIS 1',
        path='agents/iris/config.py',
        old='    beta: float = 1.0  # commitment weight\n',
        new='    beta: float = 0.25  # commitment weight\n',
        tests=[TOKENIZER_LOSS],
    ),
    dict(
        name='perceptual-dropped',
        bug='perceptual term reported but left out of the tokenizer loss',
        path='agents/iris/agent.py',
        old='return sum(terms.values()), {**terms, "warmup": warmup.astype(jnp.float32)}',
        new='return terms["vq"] + terms["rec_l1"], {**terms, "warmup": warmup.astype(jnp.float32)}',
        tests=[TOKENIZER_LOSS],
    ),
    dict(
        name='mask-sees-next-token',
        bug='causal mask off by one: each token also attends to the next one',
        path='agents/iris/transformer.py',
        old='visible = jnp.arange(max_tokens)[None, :] <= query_pos[:, None]',
        new='visible = jnp.arange(max_tokens)[None, :] <= query_pos[:, None] + 1',
        tests=[TRANSFORMER + "test_attention_is_causal", MINGPT],
    ),
    dict(
        name='action-token-position',
        bug="block layout wrong: each step's first token embedded as the action, the action as a frame token",
        path='agents/iris/transformer.py',
        old='is_action = (pos % self.tokens_per_step) == self.frame_tokens',
        new='is_action = (pos % self.tokens_per_step) == 0',
        tests=[MINGPT],
    ),
    dict(
        name='targets-not-shifted',
        bug='next-token targets one position too few: each position trained to predict its own token',
        path='agents/iris/transformer.py',
        old='predictors = jnp.roll(hidden.reshape(steps * (k + 1), -1), 1, axis=0)',
        new='predictors = jnp.roll(hidden.reshape(steps * (k + 1), -1), 0, axis=0)',
        tests=[TRANSFORMER + "test_sequence_logits_read_the_previous_position", MINGPT],
    ),
    dict(
        name='reward-at-last-frame-token',
        bug='reward predicted at the last frame token, before the action is seen',
        path='agents/iris/transformer.py',
        old='"reward": gpt.reward_logits(hidden[:, k]),',
        new='"reward": gpt.reward_logits(hidden[:, k - 1]),',
        tests=[TRANSFORMER + "test_sequence_logits_read_the_previous_position", MINGPT],
    ),
    dict(
        name='lambda-one-minus',
        bug='lambda replaced by 1 - lambda where the actor-critic loss computes its returns',
        path='agents/iris/agent.py',
        old='returns = iris_lambda_returns(reward, end, sg(values), a.gamma, a.lam)',
        new='returns = iris_lambda_returns(reward, end, sg(values), a.gamma, 1.0 - a.lam)',
        tests=[ACTOR_CRITIC_LOSS],
    ),
    dict(
        name='entropy-sign',
        bug='entropy bonus sign flipped (entropy penalised)',
        path='agents/iris/agent.py',
        old='"entropy": -a.entropy * entropy.mean(),',
        new='"entropy": a.entropy * entropy.mean(),',
        tests=[ACTOR_CRITIC_LOSS],
    ),
    dict(
        name='discount',
        bug='discount gamma 0.99 instead of IRIS 0.995',
        path='agents/iris/config.py',
        old='    gamma: float = 0.995\n',
        new='    gamma: float = 0.99\n',
        tests=[ACTOR_CRITIC_LOSS],
    ),
    dict(
        name='horizon-off-by-one',
        bug='imagination one step shorter than the horizon',
        path='agents/iris/agent.py',
        old='_, trajectory = jax.lax.scan(step, carry, jax.random.split(key, a.horizon))',
        new='_, trajectory = jax.lax.scan(step, carry, jax.random.split(key, a.horizon - 1))',
        tests=[IMAGINATION],
    ),
    dict(
        name='shards-dropout-keys',
        bug='batch shards: each part splits the GPT\'s dropout keys for its own sequences',
        path='agents/iris/agent.py',
        old='keys = shards.split(key, b)  # a dropout key per sequence',
        new='keys = jax.random.split(key, b)',
        tests=[SHARDED_WORLD_MODEL],
    ),
    dict(
        name='shards-masked-ce-per-part',
        bug='batch shards: the masked cross-entropies averaged over each part\'s own masked-in entries',
        path='agents/common/shards.py',
        old='totals, count = mean((',
        new='totals, count = ((',
        tests=[SHARDED_WORLD_MODEL],
    ),
    dict(
        name='shards-token-draw',
        bug='batch shards: imagination\'s frame tokens drawn per part (each part the first rows\' noise)',
        path='agents/iris/transformer.py',
        old='token = dists.categorical_sample(token_key, gpt.obs_logits(hidden)).astype(jnp.int32)',
        new='token = jax.random.categorical(token_key, gpt.obs_logits(hidden)).astype(jnp.int32)',
        tests=[SHARDED_ACTOR_CRITIC],
    ),
    dict(
        name='shards-policy-draw',
        bug='batch shards: imagination\'s actions drawn per part (each part the first rows\' noise)',
        path='agents/iris/agent.py',
        old='action = dists.categorical_sample(policy_key, logits).astype(jnp.int32)',
        new='action = jax.random.categorical(policy_key, logits).astype(jnp.int32)',
        tests=[SHARDED_ACTOR_CRITIC],
    ),
    dict(
        name='shards-median-per-part',
        bug='batch shards: the tokenizer\'s background is each part\'s own median frame',
        path='agents/iris/tokenizer.py',
        old='background = sg(jnp.median(shards.gather(x), axis=0, keepdims=True))',
        new='background = sg(jnp.median(x, axis=0, keepdims=True))',
        tests=[SHARDED_TOKENIZER],
    ),
    dict(
        name='shards-weighted-l1-per-part',
        bug='batch shards: the foreground-weighted L1 is the mean of the parts\' own weighted means',
        path='agents/iris/tokenizer.py',
        old='return shards.masked_means({"l1": error}, weights)["l1"]',
        new='return (weights * error).sum() / weights.sum()',
        tests=[SHARDED_TOKENIZER],
    ),
    dict(
        name='shards-codebook-per-part',
        bug='batch shards: the codebook at the end of the warm-up drawn from each part\'s own encodings',
        path='agents/iris/tokenizer.py',
        old='flat = shards.gather(jax.lax.stop_gradient(z.reshape(-1, z.shape[-1])))',
        new='flat = jax.lax.stop_gradient(z.reshape(-1, z.shape[-1]))',
        tests=[SHARDED_TOKENIZER],
    ),
    dict(
        name='shards-grads-per-part',
        bug='batch shards: each part steps with its own gradient, not the parts\' mean',
        path='agents/iris/agent.py',
        old='grads, total, metrics = shards.mean((grads, total, metrics))',
        new='total, metrics = shards.mean((total, metrics))',
        tests=[SHARDED_WORLD_MODEL],
    ),
]
