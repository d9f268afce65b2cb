"""IRIS against the reference formulas (/work/shared/reference/transformer_wm.md, IRIS section).

Each test is chosen to fail on a specific one-line bug that scripts/mutations/iris.py puts in while the other
IRIS tests stay green (scripts/mutation_check.py --agent iris):

* tokenizer: the decoder reads the straight-through value z + sg(e - z), so the reconstruction terms move the
  encoder and never the codebook (st-decoder-reads-quantised); the agent's tokenizer loss is
  L1 + perceptual + (sg(z) - e)^2 + beta (z - sg(e))^2 with IRIS's beta = 1 (commitment-weight,
  perceptual-dropped);
* GPT: a numpy minGPT (pre-LN blocks, causal softmax attention, exact GELU, final LayerNorm, ReLU MLP heads)
  over [frame tokens, action] blocks, the action embedded at the last position of each block
  (action-token-position);
* actor-critic: REINFORCE with the lambda-return baseline, entropy bonus 0.001 and value regression, with
  IRIS's gamma 0.995 and lambda 0.95 (lambda-one-minus, entropy-sign, discount); imagination runs `horizon`
  policy steps after `burn_in` real frames, from the reconstruction of the start frame (horizon-off-by-one).

Golden values are computed here in float64 numpy from those formulas; network outputs (encoder, decoder) only
enter as the inputs of a formula.
"""

import os
from types import SimpleNamespace

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from agents.iris import SPEC, IRISConfig
from agents.iris.agent import IRIS, SEGMENT_START
from agents.iris.transformer import WorldModelGPT, interleave, sequence_logits
from bench import config as config_lib
from bench import registry, spaces

# transformer_wm.md, IRIS: VQ beta 1; actor-critic gamma 0.995, lambda 0.95, entropy 0.001, horizon 20,
# burn-in 20.
BETA, GAMMA, LAMBDA, ENTROPY, HORIZON, BURN_IN = 1.0, 0.995, 0.95, 0.001, 20, 20
OBS = {"image": spaces.image(16, 16), **spaces.step_spaces()}
ACT = {"action": spaces.discrete(4)}


@pytest.fixture(scope="module")
def debug():
    """IRIS at the `debug` preset (tiny networks; IRIS's loss constants left at their defaults) and the
    components it builds: (agent, SimpleNamespace(tokenizer, world_model))."""
    config = config_lib.Config(
        run=config_lib.RunConfig(), replay=config_lib.ReplayConfig(), logger=config_lib.LoggerConfig(),
        env=config_lib.RunConfig(), agent=IRISConfig(),
    )  # fmt: skip
    preset = {k: v for k, v in registry.agent_presets(SPEC)["debug"].items() if k not in ("run", "replay")}
    agent = SPEC.make(config_lib.apply(config, preset).agent, OBS, ACT)
    tokenizer, world_model, _ = agent._build(jax.random.key(0))
    return agent, SimpleNamespace(tokenizer=tokenizer, world_model=world_model)


def toy_frames(count: int, seed: int) -> np.ndarray:
    """Coloured squares on a dark background, (count, 16, 16, 3) uint8."""
    rng = np.random.default_rng(seed)
    frames = np.full((count, 16, 16, 3), 20, np.uint8)
    for i in range(count):
        r, c = rng.integers(0, 10, 2)
        frames[i, r : r + 6, c : c + 6] = rng.integers(80, 256, 3)
    return frames


def l1_and_gradient_l1(x: np.ndarray, x_hat: np.ndarray) -> float:
    """IRIS's L1 term plus our documented LPIPS stand-in, the L1 of horizontal and vertical differences."""
    d = x - x_hat  # (N, H, W, C)
    return np.mean(np.abs(d)) + np.mean(np.abs(np.diff(d, axis=2))) + np.mean(np.abs(np.diff(d, axis=1)))


# ------------------------------------------------------------------------------------------- tokenizer


def test_reconstruction_gradient_reaches_the_encoder_straight_through(debug):
    """Straight-through: d(reconstruction terms)/d(encoder) = J_encoder^T g with g the gradient of those terms
    with respect to the decoder's input, taken at the quantised value e; the codebook gets none of it."""
    tok = debug[1].tokenizer
    frames = jnp.asarray(toy_frames(2, seed=0))
    x = jnp.asarray(frames, jnp.float32) / 255.0 * 2.0 - 1.0
    z = eqx.filter_jit(lambda encoder: encoder(x))(tok.encoder)
    flat = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
    book = np.asarray(tok.codebook, np.float64)
    nearest = np.argmin(((flat[:, None] - book[None]) ** 2).sum(-1), axis=1)
    e = jnp.asarray(book[nearest].reshape(z.shape), jnp.float32)

    @eqx.filter_jit
    def got_and_expected(tok, e):
        def reconstruction_terms(tok):
            terms, _ = tok.loss(frames)
            return terms["rec_l1"] + terms["perceptual"]

        got = jax.grad(reconstruction_terms)(tok)

        def decoder_terms(decoder_input):  # L1 + gradient L1, written out
            d = x - tok.decoder(decoder_input)
            dx, dy = d[:, :, 1:] - d[:, :, :-1], d[:, 1:] - d[:, :-1]
            return jnp.mean(jnp.abs(d)) + jnp.mean(jnp.abs(dx)) + jnp.mean(jnp.abs(dy))

        _, encoder_vjp = jax.vjp(lambda encoder: encoder(x), tok.encoder)
        (expected,) = encoder_vjp(jax.grad(decoder_terms)(e))
        return got, expected

    grads, expected = got_and_expected(tok, e)
    np.testing.assert_array_equal(grads.codebook, np.zeros_like(tok.codebook))
    moved = 0.0
    for got, want in zip(jax.tree.leaves(grads.encoder), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
        moved = max(moved, float(np.abs(want).max()))
    assert moved > 1e-3  # the encoder does get a gradient, so the check can fail


def test_agent_tokenizer_loss_is_l1_perceptual_and_vq_with_beta_one(debug):
    """The tokenizer stream's loss = mean |x - x_hat| + gradient L1 + mean (sg(z) - e)^2 + beta (z - sg(e))^2,
    beta = 1 (IRIS), x in [-1, 1], x_hat the decoder's output on the nearest codebook entries."""
    agent, components = debug
    tok = components.tokenizer
    counters = SimpleNamespace(updates={"tokenizer": jnp.zeros((), jnp.int32)})  # update 0, no warm-up
    frames = toy_frames(4, seed=1)
    stream_loss = eqx.filter_jit(
        lambda tok, images: agent._tokenizer_loss(tok, counters, {"image": images}, key=jax.random.key(1))
    )
    total, metrics = stream_loss(tok, jnp.asarray(frames[:, None]))

    x = frames.astype(np.float64) / 255.0 * 2.0 - 1.0
    z = eqx.filter_jit(lambda tok, images: tok._encode(images)[0])(tok, jnp.asarray(frames))
    flat = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
    book = np.asarray(tok.codebook, np.float64)
    nearest = np.argmin(((flat[:, None] - book[None]) ** 2).sum(-1), axis=1)
    vq = (1.0 + BETA) * np.mean((flat - book[nearest]) ** 2)  # both terms have the value mean (z - e)^2
    entries = jnp.asarray(book[nearest].reshape(z.shape), jnp.float32)
    x_hat = np.asarray(eqx.filter_jit(lambda decoder, e: decoder(e))(tok.decoder, entries), np.float64)
    expected = vq + l1_and_gradient_l1(x, x_hat)
    np.testing.assert_allclose(float(metrics["vq"]), vq, rtol=1e-4)
    np.testing.assert_allclose(float(total), expected, rtol=1e-4)


# ------------------------------------------------------------------------------------------- world model


def numpy_gpt(gpt: WorldModelGPT, tokens: np.ndarray) -> np.ndarray:
    """minGPT's forward pass over one sequence in float64 (no dropout): hidden states after the final norm."""
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731

    def layer_norm(x, norm):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + norm.eps) * f64(norm.weight) + f64(norm.bias)

    def linear(x, layer):
        return x @ f64(layer.weight).T + f64(layer.bias)

    n, per_step = len(tokens), gpt.frame_tokens + 1
    is_action = np.arange(n) % per_step == gpt.frame_tokens  # [frame tokens..., action] per step
    action_rows = f64(gpt.action_embed.weight)[np.minimum(tokens, ACTIONS - 1)]
    frame_rows = f64(gpt.frame_embed.weight)[np.minimum(tokens, VOCAB - 1)]
    x = np.where(is_action[:, None], action_rows, frame_rows) + f64(gpt.pos_embed)[:n]
    causal = np.tril(np.ones((n, n), bool))
    for block in gpt.blocks:
        q, k, v = np.split(linear(layer_norm(x, block.norm1), block.qkv), 3, axis=-1)
        heads = lambda t: t.reshape(n, gpt.heads, -1).transpose(1, 0, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        scores = np.where(causal, q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1]), -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        x = x + linear((weights @ v).transpose(1, 0, 2).reshape(n, -1), block.proj)
        hidden = linear(layer_norm(x, block.norm2), block.fc1)
        x = x + linear(0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0))), block.fc2)
    return layer_norm(x, gpt.norm)


K, STEPS, VOCAB, ACTIONS = 3, 3, 7, 4


def test_gpt_matches_a_numpy_mingpt_over_frame_and_action_blocks():
    """Hidden states, next-token logits (position j predicts token j + 1) and the reward and termination
    logits (read at each action position) equal a numpy minGPT with the action last in each block."""
    gpt = WorldModelGPT(vocab=VOCAB, actions=ACTIONS, frame_tokens=K, max_steps=STEPS, embed=8, layers=2,
                        heads=2, dropout=0.1, key=jax.random.key(0))  # fmt: skip
    params, static = eqx.partition(gpt, eqx.is_inexact_array)  # random biases and norms, not only weights
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [0.5 * jax.random.normal(key, leaf.shape) for key, leaf in zip(keys, leaves)]
    gpt = eqx.combine(jax.tree.unflatten(treedef, leaves), static)
    rng = np.random.default_rng(0)
    frames = rng.integers(ACTIONS, VOCAB, (STEPS, K))  # frame tokens past the action table: layouts differ
    actions = rng.integers(0, ACTIONS, STEPS)
    tokens = np.asarray(interleave(jnp.asarray(frames, jnp.int32), jnp.asarray(actions, jnp.int32)))
    expected = numpy_gpt(gpt, tokens)
    hidden, out = eqx.filter_jit(lambda gpt, tokens, frames, actions: (
        gpt(tokens, gpt.empty_cache(), jnp.zeros((), jnp.int32))[0], sequence_logits(gpt, frames, actions)))(
        gpt, jnp.asarray(tokens), jnp.asarray(frames, jnp.int32), jnp.asarray(actions, jnp.int32))
    np.testing.assert_allclose(hidden, expected, rtol=1e-4, atol=1e-4)

    def head(h, layer):  # Linear -> ReLU -> Linear
        f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
        hidden = np.maximum(h @ f64(layer.hidden.weight).T + f64(layer.hidden.bias), 0.0)
        return hidden @ f64(layer.out.weight).T + f64(layer.out.bias)

    for t in range(STEPS):
        for k in range(K):
            if t or k:
                want = head(expected[t * (K + 1) + k - 1], gpt.obs_head)
                np.testing.assert_allclose(out["obs"][t, k], want, rtol=1e-4, atol=1e-4)
        action_pos = t * (K + 1) + K
        np.testing.assert_allclose(out["reward"][t], head(expected[action_pos], gpt.reward_head), 1e-4, 1e-4)
        np.testing.assert_allclose(out["end"][t], head(expected[action_pos], gpt.end_head), 1e-4, 1e-4)


# ------------------------------------------------------------------------------------------- actor-critic


class FixedImagination(IRIS):
    """IRIS whose imagination is the trajectory passed as the actor-critic (a probe: known logits, values)."""

    def _imagine(self, actor_critic, state, batch, *, key, generator="kv_cache"):
        return actor_critic


def iris_lambda_returns_numpy(reward, end, value, gamma, lam):
    """IRIS `compute_lambda_returns`: G_{H-1} = V_{H-1}, G_t = r_t + (1 - d_t) gamma ((1 - lam) V_{t+1} +
    lam G_{t+1}); reward and end at t follow action t."""
    returns = np.empty_like(value)
    returns[:, -1] = value[:, -1]
    for t in reversed(range(value.shape[1] - 1)):
        bootstrap = (1 - lam) * value[:, t + 1] + lam * returns[:, t + 1]
        returns[:, t] = reward[:, t] + (1 - end[:, t]) * gamma * bootstrap
    return returns


def test_actor_critic_loss_matches_iris_formulas_at_iris_constants():
    """Over t < H - 1, with G the lambda returns (gamma 0.995, lambda 0.95) of the stopped values:
    policy = -mean(log pi(a_t) (G_t - sg(V_t))), entropy = -0.001 mean H(pi_t), value = mean (V_t - G_t)^2;
    and their gradients with respect to the logits and the values."""
    agent = FixedImagination(IRISConfig(), OBS, ACT)
    rng = np.random.default_rng(0)
    b, h, a = 3, 6, 4
    logits = rng.normal(size=(b, h, a)) * 2.0
    value = rng.normal(size=(b, h)) * 3.0
    action = rng.integers(0, a, (b, h))
    reward = rng.integers(-1, 2, (b, h)).astype(np.float64)
    end = rng.uniform(size=(b, h)) < 0.25

    def loss(params):
        fixed = {"action": jnp.asarray(action, jnp.int32), "reward": jnp.asarray(reward, jnp.float32),
                 "end": jnp.asarray(end)}  # fmt: skip
        trajectory = {**params, **fixed}
        return agent._actor_critic_loss(trajectory, None, None, key=None)

    params = {"logits": jnp.asarray(logits, jnp.float32), "value": jnp.asarray(value, jnp.float32)}
    (total, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)

    returns = iris_lambda_returns_numpy(reward, end.astype(np.float64), value, GAMMA, LAMBDA)[:, :-1]
    log_p = logits[:, :-1] - np.log(np.exp(logits[:, :-1]).sum(-1, keepdims=True))
    p = np.exp(log_p)
    chosen = np.take_along_axis(log_p, action[:, :-1, None], -1)[..., 0]
    advantage = returns - value[:, :-1]
    entropy = -(p * log_p).sum(-1)
    count = b * (h - 1)
    expected = {
        "policy": -np.mean(chosen * advantage),
        "entropy": -ENTROPY * np.mean(entropy),
        "value": np.mean((value[:, :-1] - returns) ** 2),
    }
    for name, want in expected.items():
        np.testing.assert_allclose(float(metrics[name]), want, rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(float(total), sum(expected.values()), rtol=1e-5, atol=1e-7)

    onehot = np.eye(a)[action[:, :-1]]
    grad_logits = np.zeros_like(logits)  # the last step's logits and value are not trained
    policy_grad = -(onehot - p) * advantage[..., None]
    entropy_grad = ENTROPY * p * (log_p + entropy[..., None])  # of -0.001 H; dH/dl_j = -p_j (log p_j + H)
    grad_logits[:, :-1] = (policy_grad + entropy_grad) / count
    grad_value = np.zeros_like(value)
    grad_value[:, :-1] = 2.0 * (value[:, :-1] - returns) / count  # returns and the advantage's V are stopped
    np.testing.assert_allclose(grads["logits"], grad_logits, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads["value"], grad_value, rtol=1e-4, atol=1e-7)


class CountingPolicy(eqx.Module):
    """A probe actor-critic: the LSTM 'state' counts its calls; the logits carry the mean of the frame it read
    (then every action is equally likely) and the value the call count."""

    def __call__(self, frames, state):
        count, cell = state
        count = count + 1.0
        shape = (frames.shape[0], ACT["action"].num_classes)
        logits = jnp.broadcast_to(frames.mean(axis=(1, 2, 3))[:, None], shape)
        return logits, count[:, 0], (count, cell)


def test_imagination_runs_horizon_policy_steps_after_burn_in_from_the_start_frame(debug):
    """The policy reads the `burn_in` real frames, then acts `horizon` times in imagination, first on the
    tokenizer's reconstruction of the start frame (the window's last row)."""
    assert (IRISConfig().actor_critic.horizon, IRISConfig().actor_critic.burn_in) == (HORIZON, BURN_IN)
    agent, state = debug
    c = agent.config.actor_critic
    rows = c.burn_in + 1
    images = np.stack([toy_frames(rows, seed=10 + i) for i in range(2)])  # (B, burn_in + 1, 16, 16, 3)
    flags = np.zeros((2, rows), bool)
    batch = {"image": images, SEGMENT_START: flags}
    imagine = jax.jit(lambda tokenizer, world_model, batch, key: agent._imagine(
        CountingPolicy(), SimpleNamespace(tokenizer=tokenizer, world_model=world_model), batch, key=key))
    trajectory = imagine(state.tokenizer, state.world_model, batch, jax.random.key(1))
    assert trajectory["value"].shape == (2, c.horizon)
    calls = c.burn_in + 1 + np.arange(c.horizon)  # burn-in frames read, then one call per imagined step
    np.testing.assert_array_equal(trajectory["value"], np.broadcast_to(calls, (2, c.horizon)))
    start = state.tokenizer.decode(state.tokenizer.encode(jnp.asarray(images[:, -1])))
    np.testing.assert_allclose(trajectory["logits"][:, 0, 0], np.asarray(start).mean(axis=(1, 2, 3)),
                               rtol=1e-5)  # fmt: skip
