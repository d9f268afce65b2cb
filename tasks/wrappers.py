"""Small pieces every suite's environment shares: seeds, step dicts, image resizing, protocol checks.

Nothing here imports a simulator, so importing a suite module (for `bench list`) stays cheap.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# PIL resampling filters by protocol name. "bilinear" is what DreamerV3 uses for Atari (PIL BILINEAR);
# "nearest" keeps MiniHack's tiles and Pinpad's cells crisp; "area" is PIL's box filter (OpenCV INTER_AREA).
RESIZE_METHODS = ("bilinear", "nearest", "area")


# ------------------------------------------------------------------------------------------- seeding


def check_seed(seed: Any) -> int:
    """An episode seed must be a non-negative integer (numpy's seeding rules); name the problem otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"reset(seed=...) needs an integer seed, got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"reset(seed=...) needs a non-negative seed, got {seed}")
    return int(seed)


def derive_seed(seed: int, purpose: str, bits: int = 32) -> int:
    """An independent seed for one random source of an episode, e.g. derive_seed(7, "noops").

    Different purposes give unrelated streams (numpy SeedSequence spawn keys), so adding a new random
    source never shifts the draws of an existing one.
    """
    if bits not in (31, 32, 63, 64):
        raise ValueError(f"bits must be 31, 32, 63 or 64, got {bits}")
    sequence = np.random.SeedSequence(entropy=check_seed(seed), spawn_key=(zlib.crc32(purpose.encode()),))
    words = sequence.generate_state(2, np.uint32)
    value = (int(words[0]) << 32) | int(words[1])
    return value >> (64 - bits)


def episode_rng(seed: int, purpose: str) -> np.random.Generator:
    """A numpy Generator for one random source of the episode started with `seed`."""
    return np.random.default_rng(derive_seed(seed, purpose, bits=64))


# ------------------------------------------------------------------------------------- step bookkeeping


def step_obs(
    sensors: Mapping[str, Any], reward: float, *, is_first: bool, is_last: bool, is_terminal: bool
) -> dict[str, Any]:
    """The observation dict of one step: sensors plus the four step keys with their canonical dtypes."""
    return {
        **sensors,
        "reward": np.float32(reward),
        "is_first": np.bool_(is_first),
        "is_last": np.bool_(is_last),
        "is_terminal": np.bool_(is_terminal),
    }


class EpisodeGuard:
    """Enforces reset -> step ... -> is_last -> reset, with an error that says what to do instead."""

    def __init__(self, name: str):
        self.name = name
        self.running = False

    def start(self) -> None:
        self.running = True

    def check_step(self) -> None:
        if not self.running:
            raise RuntimeError(
                f"{self.name}: step() called without a running episode (before reset() or after is_last); "
                f"call reset(seed=...) first"
            )

    def finish(self, is_last: bool) -> None:
        if is_last:
            self.running = False


# ---------------------------------------------------------------------------------------------- images


def resize_image(image: np.ndarray, size: int, method: str) -> np.ndarray:
    """Resize an (H, W, C) uint8 image to (size, size, C) with PIL; a no-op when it already has that size."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; choose one of {RESIZE_METHODS}")
    if image.shape[0] == size and image.shape[1] == size:
        return image
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "area": Image.BOX}[method]
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = np.asarray(pil.resize((size, size), resample), dtype=np.uint8)
    return resized[..., None] if channels == 1 else resized


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 1) uint8 luminance (ITU-R 601-2, as PIL's "L" mode)."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).convert("L"), dtype=np.uint8)[..., None]


# ------------------------------------------------------------------------------------- protocol checks


def require(condition: bool, protocol: Any, field: str, message: str) -> None:
    """Raise a ValueError naming the protocol field (`env.<field>` on the command line) when it is invalid."""
    if not condition:
        value = getattr(protocol, field)
        raise ValueError(f"env.{field}={value!r}: {message}")


def require_choice(protocol: Any, field: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    require(getattr(protocol, field) in choices, protocol, field, f"choose one of {choices}")


def require_positive(protocol: Any, *fields: str) -> None:
    for field in fields:
        require(getattr(protocol, field) > 0, protocol, field, "must be positive")
