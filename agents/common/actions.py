"""Action dicts <-> the flat action vector that world models and policies use.

Discrete keys become one-hot vectors, continuous keys their values in [-1, 1] (the policy's range; the
environment range is restored by `to_env`). Keys are taken in sorted order, as upstream's DictConcat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from bench.spaces import Space


@dataclasses.dataclass(frozen=True)
class ActionPart:
    key: str
    discrete: bool
    size: int  # classes for discrete keys, flat dimension for continuous keys
    shape: tuple[int, ...]
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class ActionLayout:
    """A hashable description of an action space (static under jit)."""

    parts: tuple[ActionPart, ...]

    @classmethod
    def from_spaces(cls, act_space: Mapping[str, Space]) -> ActionLayout:
        if not act_space:
            raise ValueError("the action space is empty")
        parts = []
        for key in sorted(act_space):
            space = act_space[key]
            if space.is_discrete:
                if space.shape != ():
                    raise ValueError(f"action {key!r}: only scalar discrete actions are supported, got {space}")
                parts.append(ActionPart(key, True, space.num_classes, (), 0.0, 0.0))
            elif np.issubdtype(np.dtype(space.dtype), np.floating):
                if space.low is None or space.high is None:
                    raise ValueError(f"action {key!r}: continuous actions need finite bounds, got {space}")
                size = int(np.prod(space.shape)) if space.shape else 1
                parts.append(ActionPart(key, False, size, space.shape, float(space.low), float(space.high)))
            else:
                raise ValueError(f"action {key!r}: unsupported action space {space}")
        return cls(tuple(parts))

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)

    def to_vector(self, actions: Mapping[str, Array], batch_dims: int) -> Float[Array, "*b A"]:
        """Environment actions (B..., shape) -> policy-space vectors (B..., A)."""
        pieces = []
        for part in self.parts:
            value = jnp.asarray(actions[part.key])
            lead = value.shape[:batch_dims]
            if part.discrete:
                pieces.append(jax.nn.one_hot(value.astype(jnp.int32), part.size, dtype=jnp.float32))
            else:
                value = value.astype(jnp.float32).reshape((*lead, part.size))
                # environment range -> [-1, 1]
                pieces.append(2.0 * (value - part.low) / (part.high - part.low) - 1.0)
        return jnp.concatenate(pieces, -1)

    def split(self, vector: Float[Array, "*b A"]) -> dict[str, Array]:
        """Policy-space vector -> per-key pieces (one-hot or [-1, 1] values)."""
        out, start = {}, 0
        for part in self.parts:
            out[part.key] = vector[..., start : start + part.size]
            start += part.size
        return out

    def to_env(self, vector: Float[Array, "*b A"]) -> dict[str, Array]:
        """Policy-space vector -> environment actions: class indices, or values clipped to [-1, 1] and mapped
        linearly to the space bounds (the bounded normal's samples can leave [-1, 1])."""
        out = {}
        for key, piece in self.split(vector).items():
            part = next(p for p in self.parts if p.key == key)
            if part.discrete:
                out[key] = jnp.argmax(piece, -1).astype(jnp.int32)
            else:
                value = jnp.clip(piece, -1.0, 1.0)
                value = part.low + (value + 1.0) * 0.5 * (part.high - part.low)
                out[key] = value.reshape((*piece.shape[:-1], *part.shape)).astype(jnp.float32)
        return out
