"""Observation and action spaces shared by tasks and agents.

A `Space` is a frozen, hashable description (dtype, shape, bounds), so agents can hold their spaces as
static configuration under `jax.jit`. Discrete spaces are integer spaces with `low == 0`; `high` is then the
number of classes (exclusive bound). Continuous spaces have inclusive float bounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

# Observation keys every task emits besides its sensors.
STEP_KEYS = ("reward", "is_first", "is_last", "is_terminal")
# Observation keys with this prefix are for logging or scripted policies; learning agents must not read them.
PRIVATE_PREFIX = "priv_"


@dataclasses.dataclass(frozen=True)
class Space:
    dtype: str
    shape: tuple[int, ...] = ()
    low: float | int | None = None
    high: float | int | None = None

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def is_discrete(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype), np.integer) and self.low == 0 and self.high is not None

    @property
    def num_classes(self) -> int:
        if not self.is_discrete:
            raise ValueError(f"{self} is not a discrete space")
        return int(self.high)

    def zeros(self, batch: tuple[int, ...] = ()) -> np.ndarray:
        return np.zeros(batch + self.shape, self.dtype)

    def sample(self, rng: np.random.Generator, batch: tuple[int, ...] = ()) -> np.ndarray:
        """Uniform sample (used by the random agent and for tests)."""
        if self.is_discrete:
            return rng.integers(0, self.high, batch + self.shape).astype(self.dtype)
        if np.dtype(self.dtype) == np.bool_:
            return rng.integers(0, 2, batch + self.shape).astype(bool)
        low = -1.0 if self.low is None else self.low
        high = 1.0 if self.high is None else self.high
        return rng.uniform(low, high, batch + self.shape).astype(self.dtype)

    def check(self, name: str, value) -> np.ndarray:
        """Validate one (unbatched) value against the space; raise a clear error naming the problem."""
        array = np.asarray(value)
        shown = array.tolist()
        if array.shape != self.shape:
            raise ValueError(f"{name}: expected shape {self.shape}, got {array.shape}")
        if self.is_discrete:
            if not np.issubdtype(array.dtype, np.integer):
                if not np.all(np.equal(np.mod(array, 1), 0)):
                    raise ValueError(f"{name}: expected an integer in [0, {self.high}), got {shown!r}")
            if np.any(array < 0) or np.any(array >= self.high):
                raise ValueError(f"{name}: {shown!r} is out of range [0, {self.high})")
            return array.astype(self.dtype)
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: non-finite value {shown!r}")
        if self.low is not None and self.high is not None:
            tolerance = 1e-5 * max(1.0, abs(float(self.low)), abs(float(self.high)))
            if (array < self.low - tolerance).any() or (array > self.high + tolerance).any():
                raise ValueError(f"{name}: {shown!r} is outside [{self.low}, {self.high}]")
        return array.astype(self.dtype)


def discrete(num_classes: int) -> Space:
    return Space("int32", (), 0, int(num_classes))


def box(shape: tuple[int, ...], low: float = -1.0, high: float = 1.0, dtype: str = "float32") -> Space:
    return Space(dtype, tuple(shape), low, high)


def image(height: int = 64, width: int = 64, channels: int = 3) -> Space:
    return Space("uint8", (height, width, channels), 0, 255)


def step_spaces() -> dict[str, Space]:
    """The spaces of the per-step keys every observation dict carries."""
    return {
        "reward": Space("float32"),
        "is_first": Space("bool"),
        "is_last": Space("bool"),
        "is_terminal": Space("bool"),
    }


def action_kind(act_space: Mapping[str, Space]) -> str:
    """'discrete' or 'continuous': the kind of an action space (its "action" entry), as `AgentSpec.action_kinds`
    names them."""
    return "discrete" if act_space["action"].is_discrete else "continuous"


def sensor_keys(obs_space: Mapping[str, Space]) -> list[str]:
    """Keys a learning agent may encode: everything except step keys and private keys."""
    return [k for k in obs_space if k not in STEP_KEYS and not k.startswith(PRIVATE_PREFIX)]


def to_json(spaces: Mapping[str, Space]) -> dict:
    return {k: dataclasses.asdict(v) for k, v in spaces.items()}
