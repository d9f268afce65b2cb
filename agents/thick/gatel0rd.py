"""The GateL0RD context cell of THICK's C-RSSM: a latent context that changes rarely and in jumps.

GateL0RD (Gumbsch et al. 2021) keeps a real-valued context vector `c` and rewrites it only where an update
gate opens:

    cand = tanh(W_cand [x, c_prev])
    gate = ReTanh(W_gate [x, c_prev] + N(0, sigma^2)),   ReTanh(s) = max(0, tanh(s))
    c    = gate * cand + (1 - gate) * c_prev

Because ReTanh is exactly 0 for a non-positive pre-activation, `c` stays exactly constant wherever the gate
is closed, which is what makes its changes usable as segment boundaries. The sparsity loss penalises the
*binary* gate `Heaviside(gate)` (the L0 norm of the context updates); its gradient passes straight through
the Heaviside step to the ReTanh gate.

Faithfulness: the context update uses the continuous ReTanh gate and the loss the binary straight-through
gate, as in GateL0RD and THIX. Gate noise stays on in every mode (training, acting, imagination), as in THIX.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def heaviside_straight_through(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """Forward: 1 where x > 0 else 0. Backward: identity (d out / d x = 1)."""
    binary = (x > 0).astype(x.dtype)
    return x + jax.lax.stop_gradient(binary - x)


def retanh(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """max(0, tanh(x)): exactly zero for non-positive inputs, in [0, 1) otherwise."""
    return jnp.maximum(0.0, jnp.tanh(x))


class GateL0RDCell(eqx.Module):
    """One GateL0RD step on a single example (batch outside with `jax.vmap`).

    `__call__(x, context, noise) -> (context, binary_gate)`: x (X,) the cell input (projected previous
    stochastic state and action), context (C,) the previous context, noise (C,) a standard normal draw
    (scaled by `self.noise` here; callers draw it for whole batches and sequences at once). Returns the new
    context (C,) and the straight-through binary gate (C,) used by the sparsity loss and for segment
    boundaries.
    """

    gate: eqx.nn.Linear
    candidate: eqx.nn.Linear
    noise: float = eqx.field(static=True)

    def __init__(self, input_size: int, context_size: int, *, noise: float = 0.1, key):
        gate_key, candidate_key = jax.random.split(key)
        self.gate = eqx.nn.Linear(input_size + context_size, context_size, key=gate_key)
        self.candidate = eqx.nn.Linear(input_size + context_size, context_size, key=candidate_key)
        self.noise = float(noise)

    def __call__(self, x: Float[Array, " X"], context: Float[Array, " C"], noise: Float[Array, " C"]):
        inputs = jnp.concatenate([x, context.astype(x.dtype)], -1)
        pre_gate = self.gate(inputs) + self.noise * noise
        gate = retanh(pre_gate)
        candidate = jnp.tanh(self.candidate(inputs))
        new_context = gate * candidate + (1.0 - gate) * context
        return new_context, heaviside_straight_through(gate)


def sparsity_loss(binary_gates: Float[Array, "B T C"], *, free_changes: float = 1.0) -> Float[Array, " B"]:
    """THIX's hinge form of the L0 loss, per sequence.

    Gates averaged over context dimensions, summed over time, floored at `free_changes` (about that many
    context changes per sequence are free), divided by T. Returns (B,) values; the caller scales them by
    `loss_scales.sparse`.
    """
    if binary_gates.ndim != 3:
        raise ValueError(f"sparsity_loss expects gates shaped (B, T, C), got {binary_gates.shape}")
    per_step = binary_gates.astype(jnp.float32).mean(-1)
    total = per_step.sum(-1)
    if free_changes:
        total = jnp.maximum(total, free_changes)
    return total / binary_gates.shape[1]


def context_changed(binary_gates: Float[Array, "... C"]) -> Float[Array, "..."]:
    """1.0 at steps where any context dimension's gate opened (the context changed), else 0.0."""
    return jax.lax.stop_gradient(binary_gates.max(-1) > 0).astype(jnp.float32)
