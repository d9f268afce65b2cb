"""DreamerV3 and agents/common: one-line bugs that a default test must catch (scripts/mutation_check.py).

(1)-(11) are the bugs of issue 14 that the earlier tests let pass; the lettered ones are second places for the
same kind of bug, and (12) is the image decoder's old normalisation. The tests compute their expected values
from /work/shared/reference/dreamerv3.md in float64 numpy (tests/numpy_reference.py).
"""

COMMON = "tests/test_common_golden.py"
AGENT = "tests/test_dreamerv3_golden.py"
SHARDS = "tests/test_batch_shards.py::test_two_shards_compute_the_one_device_update"

MUTATIONS = [
    dict(
        name='1',
        bug='dyn/rep stop-gradients swapped',
        path='agents/common/latents.py',
        old="    dyn = dists.categorical_kl(sg(post), prior).sum(-1)\n"
            "    rep = dists.categorical_kl(post, sg(prior)).sum(-1)\n",
        new="    dyn = dists.categorical_kl(post, sg(prior)).sum(-1)\n"
            "    rep = dists.categorical_kl(sg(post), prior).sum(-1)\n",
        tests=[COMMON, AGENT],
    ),
    dict(
        name='2',
        bug='advantage sign flipped',
        path='agents/common/behaviour.py',
        old='advantage = (returns - target_value) / scale',
        new='advantage = (target_value - returns) / scale',
        tests=[COMMON],
    ),
    dict(
        name='3',
        bug='entropy sign flipped',
        path='agents/common/behaviour.py',
        old='-(log_prob * sg(advantage) + entropy_scale * entropy)',
        new='-(log_prob * sg(advantage) - entropy_scale * entropy)',
        tests=[COMMON],
    ),
    dict(
        name='4',
        bug='continue weights not cumulative',
        path='agents/common/behaviour.py',
        old='weight = sg(jnp.cumprod(cont, 1)[:, :-1])',
        new='weight = sg(cont[:, :-1])',
        tests=[COMMON],
    ),
    dict(
        name='5',
        bug='GRU update-gate offset +1 instead of -1',
        path='agents/common/nets.py',
        old='update = jax.nn.sigmoid(update - 1.0)',
        new='update = jax.nn.sigmoid(update + 1.0)',
        tests=[COMMON, AGENT],
    ),
    dict(
        name='6',
        bug='lambda replaced by 1 - lambda (imagination returns)',
        path='agents/common/behaviour.py',
        old='returns = lambda_return(reward, cont, bootstrap, lam)',
        new='returns = lambda_return(reward, cont, bootstrap, 1.0 - lam)',
        tests=[COMMON],
    ),
    dict(
        name='6b',
        bug='lambda replaced by 1 - lambda (agent passes it)',
        path='agents/dreamerv3/agent.py',
        old='imagined_cont, value_bins, lam=cfg.imagination.lam,',
        new='imagined_cont, value_bins, lam=1.0 - cfg.imagination.lam,',
        tests=[AGENT],
    ),
    dict(
        name='6c',
        bug='lambda replaced by 1 - lambda (lambda_return)',
        path='agents/common/returns.py',
        old='mix = (1.0 - last[:, 1:]) * lam',
        new='mix = (1.0 - last[:, 1:]) * (1.0 - lam)',
        tests=[COMMON],
    ),
    dict(
        name='7',
        bug='discount dropped from the continue target',
        path='agents/dreamerv3/agent.py',
        old='cont_target = (1.0 - data["is_terminal"].astype(jnp.float32)) * discount',
        new='cont_target = (1.0 - data["is_terminal"].astype(jnp.float32))',
        tests=[AGENT],
    ),
    dict(
        name='8',
        bug='slow-critic regulariser pointed at the online critic (imagination)',
        path='agents/common/behaviour.py',
        old='slow_all = dists.twohot_mean(batched(slow_critic,',
        new='slow_all = dists.twohot_mean(batched(critic,',
        tests=[COMMON],
    ),
    dict(
        name='8b',
        bug='slow-critic regulariser pointed at the online critic (repval)',
        path='agents/common/behaviour.py',
        old='slow_value = dists.twohot_mean(batched(slow_critic, sg(features[:, :-1])), bins)',
        new='slow_value = dists.twohot_mean(batched(critic, sg(features[:, :-1])), bins)',
        tests=[COMMON],
    ),
    dict(
        name='9',
        bug='rep scale 1.0',
        path='agents/dreamerv3/config.py',
        old='    rep: float = 0.1\n',
        new='    rep: float = 1.0\n',
        tests=[AGENT],
    ),
    dict(
        name='10',
        bug='symlog-squashed reward target',
        path='agents/dreamerv3/agent.py',
        old='dists.twohot_loss(reward_logits, data["reward"], reward_bins)',
        new='dists.twohot_loss(reward_logits, dists.symlog(data["reward"]), reward_bins)',
        tests=[AGENT],
    ),
    dict(
        name='11',
        bug='repval bootstrapped from the wrong step',
        path='agents/dreamerv3/agent.py',
        old='returns[:, 0].reshape(batch_size, steps)',
        new='returns[:, 1].reshape(batch_size, steps)',
        tests=[AGENT],
    ),
    dict(
        name='12',
        bug='decoder normalises the deter projection alone: act(norm(x0) + x1)',
        path='agents/common/conv.py',
        old="            x = x + self.narrow_proj(self.narrow_hidden(narrow)).reshape(x.shape)\n"
            "        # One norm over the sum of both projections (upstream `spnorm`), "
            "not a norm of the wide part alone.\n"
            "        x = normed_activation(self.spatial_norm, self.act, x)\n",
        new="            x = self.spatial_norm(x) "
            "+ self.narrow_proj(self.narrow_hidden(narrow)).reshape(x.shape)\n"
            "        x = activation(self.act)(x)\n",
        tests=[COMMON],
    ),
    dict(
        name='conv-wgrad-taps-swapped',
        bug="narrow layers' weight gradient (XLA's, per chunk) with the kernel's rows and columns swapped",
        path='agents/common/conv.py',
        old='return jnp.transpose(total, (1, 2, 0, 3))',
        new='return jnp.transpose(total, (2, 1, 0, 3))',
        tests=["tests/test_common_nets.py"],
    ),
    dict(
        name='conv-wgrad-last-chunk',
        bug="narrow layers' weight gradient (XLA's, per chunk) leaves out the last chunk of images",
        path='agents/common/conv.py',
        old='for start in range(0, x.shape[0], chunk):',
        new='for start in range(0, x.shape[0] - chunk, chunk):',
        tests=["tests/test_common_nets.py"],
    ),
    dict(
        name='shards-no-gather',
        bug='batch shards: each part takes the return percentiles over its own rows',
        path='agents/common/returns.py',
        old='values = shards.gather(sg(values.astype(jnp.float32))).reshape(-1)',
        new='values = sg(values.astype(jnp.float32)).reshape(-1)',
        tests=[SHARDS],
    ),
    dict(
        name='shards-psum',
        bug='batch shards: the parts\' gradients and metrics summed, not averaged',
        path='agents/common/shards.py',
        old='means = jax.lax.pmean(jnp.concatenate(',
        new='means = jax.lax.psum(jnp.concatenate(',
        tests=[SHARDS],
    ),
    dict(
        name='shards-first-rows',
        bug='batch shards: every part takes the first rows of the whole draw',
        path='agents/common/shards.py',
        old='return jax.lax.dynamic_slice_in_dim(whole, jax.lax.axis_index(AXIS) * rows, rows, axis)',
        new='return jax.lax.slice_in_dim(whole, 0, rows, axis=axis)',
        tests=[SHARDS],
    ),
    dict(
        name='shards-own-draw',
        bug='batch shards: every part draws at its own shape (the same numbers on every part)',
        path='agents/common/shards.py',
        old='    whole = sample(key, (*shape[:axis], rows * count, *shape[axis + 1:]), *args)\n',
        new='    return sample(key, shape, *args)\n',
        tests=[SHARDS],
    ),
    dict(
        name='shards-grads-only',
        bug='batch shards: the gradients averaged over the parts, the metrics left per part',
        path='agents/dreamerv3/agent.py',
        old='grads, total, metrics, weighted = shards.mean((grads, total, metrics, weighted))',
        new='grads = shards.mean(grads)',
        tests=[SHARDS],
    ),
    dict(
        name='shards-metrics-only',
        bug='batch shards: the metrics averaged over the parts, each part stepping with its own gradient',
        path='agents/dreamerv3/agent.py',
        old='grads, total, metrics, weighted = shards.mean((grads, total, metrics, weighted))',
        new='total, metrics, weighted = shards.mean((total, metrics, weighted))',
        tests=[SHARDS],
    ),
]
