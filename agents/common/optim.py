"""The DreamerV3 (2024) optimizer: per-tensor adaptive gradient clipping, then LaProp, built from optax parts.

    g   <- g / max(1, |g| / (clip * max(pmin, |w|)))         per tensor (AGC)
    nu  <- beta2 nu + (1 - beta2) g^2;   u = g / (sqrt(nu / (1 - beta2^t)) + eps)   (RMS scaling first)
    mu  <- beta1 mu + (1 - beta1) u;     m = mu / (1 - beta1^t)                      (then momentum)
    w   <- w - lr_t m,   lr_t = lr * min(1, t / warmup)   (t counts from 0: the very first step is zero)

Scaling before momentum is LaProp's order (Adam does momentum first). Both moments are bias-corrected and
eps sits outside the square root, as upstream. No weight decay.

Everything after the per-tensor clipping is elementwise, so it runs on ONE flat vector of all parameters:
a few large fused kernels instead of ~10 small ones per tensor (the agents have 50-200 tensors), which
shortens compilation and the update alike. The moments are stored flat.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree


def clip_by_agc(clip: float = 0.3, pmin: float = 1e-3) -> optax.GradientTransformation:
    """Adaptive gradient clipping per tensor: bound |g| by clip * max(pmin, |w|) (optax's AGC is per unit)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("clip_by_agc needs the parameters: call update(grads, state, params)")

        def clip_one(update, param):
            update_norm = jnp.linalg.norm(update.reshape(-1))
            param_norm = jnp.linalg.norm(param.reshape(-1))
            upper = clip * jnp.maximum(pmin, param_norm)
            return update / jnp.maximum(1.0, update_norm / upper)

        return jax.tree.map(clip_one, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


def warmup_schedule(lr: float, warmup: int) -> optax.Schedule:
    """Linear ramp from 0 over `warmup` steps, then constant (upstream's `const` schedule with warmup)."""
    if warmup <= 0:
        return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])


def laprop_agc(
    lr: float = 4e-5,
    agc: float = 0.3,
    pmin: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-20,
    warmup: int = 1000,
) -> optax.GradientTransformation:
    """The full chain; use with `opt.update(grads, state, params)` (AGC reads the parameters)."""
    clip = clip_by_agc(agc, pmin) if agc else None
    elementwise = optax.chain(
        optax.scale_by_rms(decay=beta2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.ema(decay=beta1, debias=True),
        optax.scale_by_learning_rate(warmup_schedule(lr, warmup)),
    )

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        return elementwise.init(flat)

    def update_fn(updates, state, params=None):
        if clip is not None:
            updates, _ = clip.update(updates, optax.EmptyState(), params)
        flat, unravel = ravel_pytree(updates)
        # optax's bias correction raises a Python float to its int32 step count; that implicit promotion is
        # optax's own, so it runs under standard promotion even where tests make promotion strict.
        with jax.numpy_dtype_promotion("standard"):
            flat, state = elementwise.update(flat, state)
        return unravel(flat), state

    return optax.GradientTransformation(init_fn, update_fn)


def weighted_total(losses: dict, loss_scales) -> tuple:
    """sum_k scale_k mean(term_k) and the `loss/<k>` metrics; every term needs a scale and every scale a term
    (`loss_scales` is the agent's frozen dataclass of scales)."""
    import dataclasses

    scales = dataclasses.asdict(loss_scales)
    if set(scales) != set(losses):
        raise ValueError(
            f"loss terms and config.loss_scales differ: terms without a scale {sorted(set(losses) - set(scales))},"
            f" scales without a term {sorted(set(scales) - set(losses))}"
        )
    means = {k: v.mean() for k, v in losses.items()}
    total = sum(scales[k] * means[k] for k in sorted(means))
    return total, {f"loss/{k}": v for k, v in means.items()}
