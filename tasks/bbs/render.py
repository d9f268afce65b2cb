"""Offscreen drawing of the arena with numpy (no display, no pygame).

The observation reproduces upstream's pipeline: draw the arena, tint the agent's view with a grey overlay
(alpha 100), cut the agent-centred `view_size` x `view_size` crop (clipped to the arena) and shrink it with
bilinear interpolation (cv2.resize INTER_LINEAR: half-pixel centres, two taps per axis, fixed-point
weights) to `image_size`.

Bilinear shrinking reads only two source pixels per output pixel and axis, i.e. a 2 * image_size square
grid of the crop. `ViewRenderer` draws the shapes at exactly those pixels (`exact_pixels=False`, the
default), which gives the same image as drawing the whole crop (`exact_pixels=True`, kept as the reference
the tests compare against) at a fraction of the cost. A pixel belongs to a shape when its centre
(column + 0.5, row + 0.5) lies inside the shape.
"""

from __future__ import annotations

import functools

import numpy as np

from tasks.bbs.arena import Layout

BACKGROUND_COLOUR = (0, 0, 0)
WALL_COLOUR = (149, 165, 166)  # pymunk's debug-draw colour of static shapes: upstream's walls
GOAL_COLOUR = (0, 130, 65)
VIEW_TINT = 128.0  # grey (128, 128, 128) ...
VIEW_TINT_ALPHA = 100 / 255  # ... blended with alpha 100 over the agent's view

# Each pixel is one uint64 word holding R, G and B CHANNEL_BITS apart ("spread" colour). Drawing, gathering
# and the bilinear sum then handle one word per pixel instead of three bytes (the observation took ~0.6x
# the time of the same steps on (..., 3) uint8 in our profile). With the four bilinear weights of an output
# pixel in fixed point summing to 2**WEIGHT_BITS, a channel's weighted sum stays below 256 * 2**12 < 2**21:
# no carry into the next channel.
CHANNEL_BITS = 21
WEIGHT_BITS = 12
CHANNEL_SHIFTS = np.array([0, CHANNEL_BITS, 2 * CHANNEL_BITS], np.uint64)
CHANNEL_MASK = np.uint64(2**CHANNEL_BITS - 1)
# tint applied to an integer colour level: round(level (1 - alpha) + 128 alpha)
TINT_TABLE = np.rint(np.arange(256) * (1 - VIEW_TINT_ALPHA) + VIEW_TINT * VIEW_TINT_ALPHA).astype(np.uint8)


@functools.cache
def spread(colour: tuple[int, int, int]) -> np.uint64:
    red, green, blue = (int(c) for c in colour)
    return np.uint64(red | green << CHANNEL_BITS | blue << 2 * CHANNEL_BITS)


def unspread(words: np.ndarray) -> np.ndarray:
    """Spread colour words (...,) -> (..., 3) uint8 (each channel must be <= 255)."""
    return ((words[..., None] >> CHANNEL_SHIFTS) & CHANNEL_MASK).astype(np.uint8)


def _rect_mask(shape: tuple[int, int], rect) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie in rect (x0, y0, x1, y1), half-open."""
    x0, y0, x1, y1 = rect
    columns = np.arange(shape[1]) + 0.5
    rows = np.arange(shape[0]) + 0.5
    return ((rows >= y0) & (rows < y1))[:, None] & ((columns >= x0) & (columns < x1))[None, :]


def static_layer(layout: Layout) -> np.ndarray:
    """The parts that never move (background, goal slot, walls): spread colours, (length, width) uint64."""
    shape = (layout.length, layout.width)
    image = np.full(shape, spread(BACKGROUND_COLOUR), np.uint64)
    image[_rect_mask(shape, layout.goal_rect())] = spread(GOAL_COLOUR)
    for rect in layout.wall_rects():
        image[_rect_mask(shape, rect)] = spread(WALL_COLOUR)
    return image


def _inside_polygon(vertices: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(len(ys), len(xs)) mask of the points (xs[j], ys[i]) inside a convex polygon of positive signed area
    (tasks.bbs.arena orders every shape so; rotations keep it)."""
    start = vertices[:, :, None, None]
    edge = (np.concatenate([vertices[1:], vertices[:1]]) - vertices)[:, :, None, None]
    cross = edge[:, 0] * (ys[None, :, None] - start[:, 1]) - edge[:, 1] * (xs[None, None, :] - start[:, 0])
    return (cross >= 0).all(axis=0)


def rasterise(background: np.ndarray, drawables, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw the moving shapes over the static layer at the pixels rows x columns (sorted arena indices).

    Returns spread colours (len(rows), len(columns)) uint64; shapes are drawn in order, later on top.
    """
    width = background.shape[1]
    image = np.take(background.ravel(), rows[:, None] * width + columns[None, :])
    xs = columns + 0.5
    ys = rows + 0.5
    for kind, geometry, colour in drawables:
        if kind == "circle":
            cx, cy, radius = geometry
            x0, x1, y0, y1 = cx - radius, cx + radius, cy - radius, cy + radius
        else:
            (x0, y0), (x1, y1) = geometry.min(axis=0), geometry.max(axis=0)
        c0, c1 = np.searchsorted(xs, x0, side="left"), np.searchsorted(xs, x1, side="right")
        r0, r1 = np.searchsorted(ys, y0, side="left"), np.searchsorted(ys, y1, side="right")
        if c0 >= c1 or r0 >= r1:
            continue  # outside the drawn pixels
        sub_x, sub_y = xs[c0:c1], ys[r0:r1]
        if kind == "circle":
            mask = (sub_y[:, None] - cy) ** 2 + (sub_x[None, :] - cx) ** 2 <= radius**2
        else:
            mask = _inside_polygon(geometry, sub_x, sub_y)
        image[r0:r1, c0:c1][mask] = spread(colour)
    return image


def bilinear_taps(view_size: int, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2.resize INTER_LINEAR along one axis: (first tap, second tap, weight of the second) per output."""
    source = (np.arange(image_size) + 0.5) * (view_size / image_size) - 0.5
    first = np.floor(source).astype(np.int64)
    weight = source - first
    weight[first < 0] = 0.0
    first = np.clip(first, 0, view_size - 1)
    second = np.minimum(first + 1, view_size - 1)
    return first, second, weight


class ViewRenderer:
    """The agent's observation: tinted, agent-centred crop shrunk to image_size x image_size RGB."""

    def __init__(self, view_size: int, image_size: int, *, exact_pixels: bool = False):
        self.view_size = view_size
        self.image_size = image_size
        first, second, weight = bilinear_taps(view_size, image_size)
        if exact_pixels:
            self.offsets = np.arange(view_size)
        else:
            self.offsets = np.unique(np.concatenate([first, second]))
        # the four taps of each output pixel as flat indices into the drawn grid, with fixed-point weights
        first, second = np.searchsorted(self.offsets, first), np.searchsorted(self.offsets, second)
        size = len(self.offsets)
        corners = [(first, 1 - weight), (second, weight)]
        self.tap_indices = []
        weights = []
        for row_index, row_weight in corners:
            for column_index, column_weight in corners:
                self.tap_indices.append(row_index[:, None] * size + column_index[None, :])
                weights.append(row_weight[:, None] * column_weight[None, :])
        fixed = np.rint(np.stack(weights) * 2**WEIGHT_BITS).astype(np.int64)
        # rounding may leave the sum off by one or two: give the difference to the largest weight
        largest = fixed.argmax(axis=0)
        corrected = np.take_along_axis(fixed, largest[None], 0) + 2**WEIGHT_BITS - fixed.sum(0)
        np.put_along_axis(fixed, largest[None], corrected, 0)
        self.tap_weights = fixed.astype(np.uint64)

    def camera(self, layout: Layout, agent_x: float, agent_y: float) -> tuple[int, int]:
        """Top-left arena pixel of the crop: centred on the agent, clipped so it stays inside the arena."""
        half = self.view_size / 2
        x = min(max(agent_x - half, 0.0), layout.width - self.view_size)
        y = min(max(agent_y - half, 0.0), layout.length - self.view_size)
        return int(x), int(y)  # upstream cut the crop with an integer pygame rect

    def observe(self, background: np.ndarray, drawables, camera: tuple[int, int]) -> np.ndarray:
        """(image_size, image_size, 3) uint8 from the static layer, the shapes and the crop's corner."""
        x, y = camera
        grid = rasterise(background, drawables, x + self.offsets, y + self.offsets).ravel()
        total = np.take(grid, self.tap_indices[0]) * self.tap_weights[0]
        for indices, weights in zip(self.tap_indices[1:], self.tap_weights[1:]):
            total += np.take(grid, indices) * weights
        levels = (total[..., None] >> CHANNEL_SHIFTS) & CHANNEL_MASK
        levels = (levels + np.uint64(2 ** (WEIGHT_BITS - 1))) >> np.uint64(WEIGHT_BITS)  # round to 0..255
        # the grey view overlay is an affine map of the colours, so it can follow the shrink
        return TINT_TABLE[levels]


def full_arena(background: np.ndarray, drawables, view_rect: tuple[int, int, int] | None = None):
    """The whole arena as upstream's screen showed it (with the tinted view square), (length, width, 3)."""
    length, width = background.shape
    image = unspread(rasterise(background, drawables, np.arange(width), np.arange(length)))
    if view_rect is not None:
        x, y, size = view_rect
        image[y : y + size, x : x + size] = TINT_TABLE[image[y : y + size, x : x + size]]
    return image
