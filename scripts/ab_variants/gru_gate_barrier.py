"""`BlockGRU` as it is against the same GRU with its gates' reset, candidate and update parts put behind an
`optimization_barrier` (tried on 2026-12-04, not adopted). `bench perf agent --profile` puts 5% of a `size1m`
update in one fusion of the imagination that transposes the gates' block-linear output and applies the
sigmoids and tanh to it (f32[1024,512] `multiply_add_fusion`, ~6 ms per imagined step, ~1 ms when the GRU is
scanned alone); the barrier makes XLA materialise the transposed gates first. For scripts/update_ab.py."""

import jax
import jax.numpy as jnp

from agents.common import nets

present = nets.BlockGRU.__call__


def behind_barrier(self, deter, stoch, action):
    act = nets.activation(self.act)
    blocks = self.blocks
    action = action / jax.lax.stop_gradient(jnp.maximum(1.0, jnp.abs(action)))
    shared = jnp.concatenate([self.deter_in(deter), self.stoch_in(stoch), self.action_in(action)])
    x = jnp.concatenate([deter.reshape(blocks, -1), jnp.broadcast_to(shared, (blocks, shared.size))], -1)
    x = x.reshape(-1)
    for layer, norm in zip(self.hidden_layers, self.hidden_norms):
        x = act(norm(layer(x)))
    gates = self.gates(x).reshape(blocks, 3, -1)
    parts = tuple(gates[:, part].reshape(-1) for part in range(3))
    reset, candidate, update = jax.lax.optimization_barrier(parts)
    candidate = jnp.tanh(jax.nn.sigmoid(reset) * candidate)
    update = jax.nn.sigmoid(update - 1.0)
    return update * candidate + (1.0 - update) * deter


def use_present():
    nets.BlockGRU.__call__ = present


def use_barrier():
    nets.BlockGRU.__call__ = behind_barrier


VARIANTS = {"present": use_present, "gates behind a barrier": use_barrier}
