"""Plain-numpy (float64) forms of the DreamerV3 formulas, written from /work/shared/reference/dreamerv3.md and
the upstream equations it cites, for the golden-value tests. Nothing here imports our agent code: a test
computes the expected value with these functions from the same weights and compares it with our module.

Networks here are functions of a dict of weight arrays; `randomise` fills a module with fixed random
weights (so a test does not depend on our initialisation), and the tests read the arrays back from it.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

RMS_EPS = 1e-4  # upstream RMSNorm epsilon (reference: "RMSNorm (eps 1e-4)")


def randomise(module, rng: np.random.Generator, scale: float = 0.5):
    """The module with every float array replaced by normal(0, scale) values (norm scales around 1)."""
    arrays, static = eqx.partition(module, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(arrays)
    fresh = [jnp.asarray(rng.normal(0.0, scale, leaf.shape), jnp.float32) for leaf in leaves]
    return eqx.combine(jax.tree.unflatten(treedef, fresh), static)


def f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


# ------------------------------------------------------------------------------------------- elementwise


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def rmsnorm(x, scale):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + RMS_EPS) * f64(scale)


def symlog(x):
    return np.sign(x) * np.log1p(np.abs(x))


# ------------------------------------------------------------------------------------------------ layers


def linear(x, layer):
    return x @ f64(layer.weight) + f64(layer.bias)


def normed_linear(x, layer):
    """Linear -> RMSNorm -> SiLU."""
    return silu(rmsnorm(linear(x, layer.linear), layer.norm.scale))


def block_linear(x, layer):
    """Block-diagonal matrix written out in full: block g maps input slice g to output slice g."""
    weight = f64(layer.weight)
    groups, ins, outs = weight.shape
    full = np.zeros((groups * ins, groups * outs))
    for g in range(groups):
        full[g * ins : (g + 1) * ins, g * outs : (g + 1) * outs] = weight[g]
    return x @ full + f64(layer.bias)


def block_gru(gru, deter, stoch, action):
    """The 2024 RSSM core for one example (reference: World model / Recurrent core)."""
    deter, stoch, action = f64(deter), f64(stoch), f64(action)
    blocks = gru.blocks
    action = action / np.maximum(1.0, np.abs(action))
    shared = np.concatenate(
        [normed_linear(deter, gru.deter_in), normed_linear(stoch, gru.stoch_in), normed_linear(action, gru.action_in)]
    )
    per_block = deter.size // blocks
    x = np.concatenate([np.concatenate([deter[g * per_block : (g + 1) * per_block], shared]) for g in range(blocks)])
    for layer, norm in zip(gru.hidden_layers, gru.hidden_norms):
        x = silu(rmsnorm(block_linear(x, layer), norm.scale))
    gates = block_linear(x, gru.gates)  # block g holds [reset_g, candidate_g, update_g]
    reset, cand, update = (
        np.concatenate([gates[g * 3 * per_block + i * per_block :][:per_block] for g in range(blocks)])
        for i in range(3)
    )
    cand = np.tanh(sigmoid(reset) * cand)
    update = sigmoid(update - 1.0)
    return update * cand + (1.0 - update) * deter


def unimix_log_probs(logits, unimix):
    probs = (1.0 - unimix) * softmax(logits) + unimix / logits.shape[-1]
    return np.log(probs)


def categorical_kl(log_p, log_q):
    return np.sum(np.exp(log_p) * (log_p - log_q), -1)


# ---------------------------------------------------------------------------------------------- conv


def conv_same(x, weight, bias):
    """Stride-1 'SAME' cross-correlation of one (H, W, I) image with an (k, k, I, O) kernel."""
    weight = f64(weight)
    k = weight.shape[0]
    r = k // 2
    h, w, _ = x.shape
    padded = np.pad(x, ((r, r), (r, r), (0, 0)))
    out = np.zeros((h, w, weight.shape[3]))
    for dy in range(k):
        for dx in range(k):
            out += padded[dy : dy + h, dx : dx + w] @ weight[dy, dx]
    return out + f64(bias)


def upsample(x):
    return x.repeat(2, 0).repeat(2, 1)


def conv_decoder(dec, wide, narrow):
    """Upstream `Decoder` image path for one example: act(norm(x0 + x1)), then upsample + conv stages."""
    height, width = dec.minres
    blocks = dec.blocks
    x0 = block_linear(f64(wide), dec.wide_proj)
    x0 = x0.reshape(blocks, height, width, -1).transpose(1, 2, 0, 3).reshape(height, width, -1)  # (g h w c) -> h w (g c)
    x1 = linear(normed_linear(f64(narrow), dec.narrow_hidden), dec.narrow_proj).reshape(x0.shape)
    x = silu(rmsnorm(x0 + x1, dec.spatial_norm.scale))
    for conv, norm in zip(dec.convs[:-1], dec.norms):
        x = silu(rmsnorm(conv_same(upsample(x), conv.weight, conv.bias), norm.scale))
    last = dec.convs[-1]
    return sigmoid(conv_same(upsample(x), last.weight, last.bias))


# ------------------------------------------------------------------------------------------- returns


def twohot(x, bins):
    """Weights on the two bins around x, linear in the raw distance; all weight on an end bin outside."""
    bins = f64(bins)
    out = np.zeros(bins.shape)
    if x <= bins[0]:
        out[0] = 1.0
    elif x >= bins[-1]:
        out[-1] = 1.0
    else:
        k = np.searchsorted(bins, x, side="right") - 1
        frac = (x - bins[k]) / (bins[k + 1] - bins[k])
        out[k], out[k + 1] = 1.0 - frac, frac
    return out


def twohot_ce(logits, target, bins):
    """Cross-entropy of softmax(logits) against twohot(target), elementwise over leading dims."""
    logits = f64(logits)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    flat_t = np.asarray(target, np.float64).reshape(-1)
    encoded = np.stack([twohot(t, bins) for t in flat_t]).reshape(*np.shape(target), -1)
    return -np.sum(encoded * log_probs, -1)


def lambda_returns(reward, term, last, boot, disc, lam):
    """Upstream `lambda_return`: R_t = r_{t+1} + live_{t+1} ((1 - c_{t+1}) boot_{t+1} + c_{t+1} R_{t+1}),
    live = (1 - term) disc, c = (1 - last) lam, R_T = boot_T; returns R_0..R_{T-1} as a loop over time."""
    reward, term, last, boot = f64(reward), f64(term), f64(last), f64(boot)
    steps = reward.shape[1]
    rets = np.zeros_like(reward)
    rets[:, -1] = boot[:, -1]
    for t in reversed(range(steps - 1)):
        live = (1.0 - term[:, t + 1]) * disc
        mix = (1.0 - last[:, t + 1]) * lam
        rets[:, t] = reward[:, t + 1] + live * ((1.0 - mix) * boot[:, t + 1] + mix * rets[:, t + 1])
    return rets[:, :-1]
