"""Small pieces every suite's environment shares: seeds, step dicts, image resizing, protocol checks.

Nothing here imports a simulator, so importing a suite module (for `bench list`) stays cheap.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# Resize methods by protocol name. "bilinear" is what DreamerV3 (2024) uses for Atari (PIL BILINEAR);
# "nearest" keeps MiniHack's tiles and Pinpad's cells crisp; "area" is OpenCV's INTER_AREA, which DreamerV3's
# 2023 code used (`area_resize`; PIL's BOX filter differs: it samples pixel centres, not overlaps).
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
    """Resize an (H, W, C) uint8 image to (size, size, C); a no-op when it already has that size.

    "bilinear" and "nearest" are PIL's filters, "area" is OpenCV's INTER_AREA (`area_resize`)."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; choose one of {RESIZE_METHODS}")
    if image.shape[0] == size and image.shape[1] == size:
        return image
    if method == "area":
        return area_resize(image, size, size)
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[method]
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = np.asarray(pil.resize((size, size), resample), dtype=np.uint8)
    return resized[..., None] if channels == 1 else resized


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shrink an (H, W, C) uint8 image to (height, width, C) by pixel-area averaging, as OpenCV's INTER_AREA.

    Output pixel (i, j) covers the source rectangle [i sy, (i + 1) sy) x [j sx, (j + 1) sx), sy = H / height,
    sx = W / width, and is the mean of the source pixels weighted by their overlap with it (separable: row
    weights times column weights). OpenCV's two code paths, down to float32 arithmetic and rounding:

    * integer factors: the plain block mean; uint8 rounds half up for 2x2 blocks of 1, 3 or 4 channels
      (its (sum + 2) >> 2 path) and otherwise rounds sum * float32(1 / area) half to even;
    * other factors: float32 weights overlap / cell width per axis, accumulated in float32 along x then y,
      rounded half to even.

    Enlarging is refused: OpenCV's INTER_AREA then switches to a bilinear variant that we do not reproduce.
    """
    source_h, source_w, channels = image.shape
    if height > source_h or width > source_w:
        raise ValueError(
            f"area resize (OpenCV INTER_AREA) only shrinks: {source_h}x{source_w} -> {height}x{width} "
            "enlarges; use 'bilinear' or 'nearest'"
        )
    scale_y, scale_x = 1.0 / (height / source_h), 1.0 / (width / source_w)  # OpenCV's 1 / inv_scale
    if scale_y == round(scale_y) and scale_x == round(scale_x):
        fy, fx = int(round(scale_y)), int(round(scale_x))
        blocks = image.reshape(height, fy, width, fx, channels).astype(np.int64).sum(axis=(1, 3))
        if fy == fx == 2 and channels in (1, 3, 4):
            return ((blocks + 2) >> 2).astype(np.uint8)
        mean = blocks.astype(np.float32) * (np.float32(1) / np.float32(fy * fx))
        return np.clip(np.rint(mean), 0, 255).astype(np.uint8)
    index_x, alpha_x = _area_weights(source_w, width)
    index_y, alpha_y = _area_weights(source_h, height)
    # Columns and channels share one axis, so each weight multiplies a contiguous run (fast in numpy).
    pixels = image.reshape(source_h, source_w * channels).astype(np.float32)
    rows = np.zeros((source_h, width * channels), np.float32)
    lanes = np.arange(channels)
    for k in range(index_x.shape[1]):  # each output column's k-th source column, in OpenCV's order
        columns = (index_x[:, k, None] * channels + lanes).ravel()
        rows += pixels[:, columns] * np.repeat(alpha_x[:, k], channels)
    out = np.zeros((height, width * channels), np.float32)
    for k in range(index_y.shape[1]):
        out += alpha_y[:, k, None] * rows[index_y[:, k]]
    out = out.reshape(height, width, channels)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _area_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """INTER_AREA's weights along one axis (OpenCV computeResizeAreaTab): (target, K) source indices and
    float32 weights, padded with weight 0. Output d covers [d s, (d + 1) s) of the source, s = source /
    target; a source pixel's weight is its overlap with that interval over the cell width (clipped at the
    edge), and slivers under 1e-3 px are dropped."""
    scale = 1.0 / (target / source)
    entries: list[list[tuple[int, float]]] = []
    for d in range(target):
        start = d * scale
        end = start + scale
        cell = min(scale, source - start)
        last = min(math.floor(end), source - 1)
        first = min(math.ceil(start), last)
        weights = []
        if first - start > 1e-3:
            weights.append((first - 1, (first - start) / cell))
        weights += [(s, 1.0 / cell) for s in range(first, last)]
        if end - last > 1e-3:
            weights.append((last, min(end - last, 1.0, cell) / cell))
        entries.append(weights)
    size = max(len(weights) for weights in entries)
    index = np.zeros((target, size), np.intp)
    alpha = np.zeros((target, size), np.float32)
    for d, weights in enumerate(entries):
        for k, (s, w) in enumerate(weights):
            index[d, k], alpha[d, k] = s, w
    return index, alpha


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
