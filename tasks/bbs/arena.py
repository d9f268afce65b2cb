"""BringBackShapes physics: a 2-D pymunk arena, one `space.step` of 1/60 s per env frame.

Coordinates are arena pixels with y pointing down (image rows), so the physics state maps onto the picture
without flips. Sizes, masses and forces follow the published environment (arnavkj1995/BBS, see
/work/shared/reference/vsg_bbs.md). Where the released code had bugs, we implement the described task and
say so at the place of the fix:

* seeding: every random draw comes from the `numpy.random.Generator` handed to `Arena` (upstream mixed the
  unseeded `random`, `numpy.random` and `secrets` modules), and every episode gets a fresh pymunk space;
* the push force acts at the body's centre of gravity along the chosen heading in world axes (upstream
  applied it at the world point (x, x), which adds a large spurious torque);
* `variable_goal_position` moves the goal's wall blocks with the goal (upstream moved only the green
  rectangle, so the opening stayed where it was);
* shapes are centred on their centroid (see `OBJECT_SHAPES`) and everything spawns clear of the walls and
  left of the goal line.

Two deliberate deviations: for speed, the objects' soft speed cap runs right after each physics step rather
than inside it (see `Arena._after_step`); and an object is counted in the frame whose step carried it past
the line, where upstream's check ran before the next step and so counted it one frame (1/60 s) later. The
body leaves the space before that next step either way, so the motion is the same; the reward (and the
terminal step) can arrive one agent step earlier, credited to the action that caused it.

tests/test_bbs_physics.py checks the agent's trajectory in free flight and while pushing a square against
a numpy re-derivation of upstream's pymunk update (positions, then velocities with damping 0.7**dt and the
100-fold force, then the inelastic contact impulse and its bias).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pymunk

# --- arena (arena pixels; the width and length scale with `arena_scale`, the walls do not)
ARENA_WIDTH = 800
ARENA_LENGTH = 700
WALL = 125  # wall thickness on every side
WALL_FRICTION = 1.0
WALL_ELASTICITY = 0.7
GOAL_WIDTH = 100  # the goal slot is cut into the inside of the right wall, GOAL_WIDTH deep
GOAL_HEIGHT_FACTOR = 0.5  # slot height = 0.5 * (length - 2 * WALL)
SCORE_MARGIN = 5  # an object is returned once its centre is this far past the goal line

# --- physics
FPS = 60
DAMPING = 0.7  # fraction of velocity kept per second
MAX_FORCE = 400.0  # the action's force range is [0, MAX_FORCE]
# Upstream applies the action force 100 times per frame (its "frameskip"); forces accumulate in Chipmunk
# until the step, so we apply 100x the force once, which is the same impulse.
FORCE_REPEATS = 100
GOAL_BOUNCE = 0.3  # a body that reaches the goal line is put back with velocity -0.3 v

# --- agent
AGENT_RADIUS = 15.0
AGENT_DENSITY = 0.1  # mass pi 15^2 0.1 ~ 70.7, moment from the disc
AGENT_FRICTION = 0.5
AGENT_SPAWN_INSET = WALL + AGENT_RADIUS  # 140 px from each outer edge

# --- objects
OBJECT_MASS = 20.0
OBJECT_MOMENT = 1e6  # upstream's explicit moment: objects barely rotate when pushed
OBJECT_ELASTICITY = 1.0
OBJECT_FRICTION = 0.5
OBJECT_MAX_SPEED = 800.0  # soft cap against tunnelling: above it the speed shrinks by 1% per frame
OBJECT_SPAWN_FRACTION = 0.7  # objects spawn in the left 70% of the interior
# Vertices as published. Upstream put the body origin at a corner of the triangle, square and rectangle
# (so they turned about a corner and "x >= goal_x + 5" tested a corner); we shift every polygon to its
# centroid so the position of an object is its centre.
OBJECT_SHAPES = {
    "triangle": ((0, 0), (50, 0), (25, 25)),
    "square": ((0, 0), (50, 0), (50, 50), (0, 50)),
    "rectangle": ((0, 0), (50, 0), (50, 25), (0, 25)),
    "pentagon": ((5, -17), (-19, 0), (-10, 28), (19, 28), (28, 0)),
    "hexagon": ((17, -14), (-8, -14), (-20, 7), (-8, 29), (17, 29), (30, 8)),
}
# pygame's named colours that upstream drew with
OBJECT_COLOURS = {
    "orange": (255, 165, 0),
    "blue": (0, 0, 255),
    "green": (0, 255, 0),
    "red": (255, 0, 0),
    "purple": (160, 32, 240),
}
AGENT_COLOUR = (70, 130, 180)  # steelblue

# --- distractors: kites pushed by a random walk of forces
DISTRACTOR_VERTICES = ((-30, 0), (0, 15), (10, 0), (0, -15))
DISTRACTOR_DENSITY = 0.1  # kite area 600 -> mass 60
DISTRACTOR_FRICTION = 0.5
DISTRACTOR_RADIUS = 12.0  # upstream's spawn inset and goal-line clamp use this radius
DISTRACTOR_FORCE_SCALE = 0.2  # distractor force = U[0, MAX_FORCE) * 0.2 (x FORCE_REPEATS)
DISTRACTOR_HOLD = (2, 10)  # a drawn force is held for randint(2, 10) = 2..9 frames
DISTRACTOR_COLOUR = (188, 143, 143)  # rosybrown


def centred(vertices) -> np.ndarray:
    """Polygon vertices shifted so the centroid (area centre) is the origin, ordered with positive signed
    area (the winding the renderer's inside test expects; rotations keep it)."""
    points = np.asarray(vertices, np.float64)
    following = np.roll(points, -1, axis=0)
    cross = points[:, 0] * following[:, 1] - following[:, 0] * points[:, 1]
    area = cross.sum() / 2
    centroid = ((points + following) * cross[:, None]).sum(0) / (6 * area)
    points = points - centroid
    return points if area > 0 else points[::-1].copy()


CENTRED_OBJECT_SHAPES = {name: centred(v) for name, v in OBJECT_SHAPES.items()}
CENTRED_DISTRACTOR = centred(DISTRACTOR_VERTICES)
# How far any object vertex reaches from its centre; objects spawn at least this far from the walls.
OBJECT_EXTENT = max(float(np.linalg.norm(v, axis=1).max()) for v in CENTRED_OBJECT_SHAPES.values())
DISTRACTOR_EXTENT = float(np.linalg.norm(CENTRED_DISTRACTOR, axis=1).max())


@dataclasses.dataclass(frozen=True)
class Layout:
    """The static geometry of one episode (arena pixels, y down)."""

    width: int
    length: int
    goal_top: float  # the slot spans rows [goal_top, goal_top + goal_height)

    @classmethod
    def create(cls, arena_scale: float, goal_top: float | None = None) -> Layout:
        width, length = int(ARENA_WIDTH * arena_scale), int(ARENA_LENGTH * arena_scale)
        layout = cls(width, length, 0.0)
        centred_top = WALL + (length - 2 * WALL - layout.goal_height) / 2
        return dataclasses.replace(layout, goal_top=centred_top if goal_top is None else float(goal_top))

    @property
    def goal_height(self) -> float:
        return GOAL_HEIGHT_FACTOR * (self.length - 2 * WALL)

    @property
    def goal_x(self) -> float:
        """The goal line: the left edge of the slot. The agent cannot cross it."""
        return float(self.width - WALL - GOAL_WIDTH)

    @property
    def goal_bottom(self) -> float:
        return self.goal_top + self.goal_height

    def goal_rect(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the green slot."""
        return (self.goal_x, self.goal_top, self.width - WALL, self.goal_bottom)

    def wall_rects(self) -> list[tuple[float, float, float, float]]:
        """(x0, y0, x1, y1) of the four outer walls and the two blocks beside the goal slot."""
        w, l, gx = self.width, self.length, self.goal_x
        rects = [
            (0, 0, WALL, l),
            (0, 0, w, WALL),
            (w - WALL, 0, w, l),
            (0, l - WALL, w, l),
            (gx, WALL, w - WALL, self.goal_top),
            (gx, self.goal_bottom, w - WALL, l - WALL),
        ]
        return [r for r in rects if r[2] > r[0] and r[3] > r[1]]  # a goal at the edge leaves no block


@dataclasses.dataclass
class ArenaObject:
    kind: str
    colour: tuple[int, int, int]
    body: pymunk.Body
    shape: pymunk.Poly
    alive: bool = True


@dataclasses.dataclass
class Distractor:
    body: pymunk.Body
    shape: pymunk.Poly
    heading: float = 0.0
    force: float = 0.0
    frames_left: int = 0


class Arena:
    """One episode of the physics world. Everything random is drawn from `rng`, in a fixed order."""

    def __init__(
        self,
        layout: Layout,
        *,
        num_objects: int,
        num_distractors: int,
        rng: np.random.Generator,
    ):
        self.layout = layout
        self.rng = rng
        # A fresh space per episode: Chipmunk's broad-phase and contact caches then carry nothing over from
        # earlier episodes, so an episode depends only on its seed and actions.
        self.space = pymunk.Space()
        self.space.gravity = (0.0, 0.0)
        self.space.damping = DAMPING
        for x0, y0, x1, y1 in layout.wall_rects():
            wall = pymunk.Poly(self.space.static_body, [(x0, y0), (x0, y1), (x1, y1), (x1, y0)])
            wall.friction = WALL_FRICTION
            wall.elasticity = WALL_ELASTICITY
            self.space.add(wall)
        self.agent, self.agent_shape = self._make_agent()
        self.distractors = [self._make_distractor() for _ in range(num_distractors)]
        self.objects = [self._make_object() for _ in range(num_objects)]
        self.returned = 0

    # ------------------------------------------------------------------------------------------- spawn

    def _spawn_x_high(self, radius: float) -> float:
        # Upstream spawned over the whole interior, i.e. possibly inside the blocks beside the goal slot,
        # from where the goal-line clamp teleported the body; we keep spawns left of the goal line.
        return self.layout.goal_x - radius

    def _make_agent(self):
        inset = AGENT_SPAWN_INSET
        x = self.rng.uniform(inset, self._spawn_x_high(AGENT_RADIUS))
        y = self.rng.uniform(inset, self.layout.length - inset)
        body = pymunk.Body()
        shape = pymunk.Circle(body, AGENT_RADIUS)
        shape.density = AGENT_DENSITY
        shape.friction = AGENT_FRICTION
        body.position = (x, y)
        self.space.add(body, shape)
        return body, shape

    def _make_distractor(self) -> Distractor:
        inset = WALL + DISTRACTOR_RADIUS
        x = self.rng.uniform(inset, self._spawn_x_high(DISTRACTOR_RADIUS))
        y = self.rng.uniform(inset, self.layout.length - inset)
        body = pymunk.Body()
        shape = pymunk.Poly(body, [tuple(v) for v in CENTRED_DISTRACTOR])
        shape.density = DISTRACTOR_DENSITY
        shape.friction = DISTRACTOR_FRICTION
        body.position = (x, y)
        self.space.add(body, shape)
        return Distractor(body, shape)

    def _make_object(self) -> ArenaObject:
        # Upstream drew the centre uniformly from x in [WALL, WALL + 0.7 interior width], y in [WALL,
        # length - WALL], so shapes could start half inside a wall; we keep the same ranges inset by the
        # largest shape extent.
        interior_width = self.layout.width - 2 * WALL
        x = self.rng.uniform(WALL + OBJECT_EXTENT, WALL + OBJECT_SPAWN_FRACTION * interior_width)
        y = self.rng.uniform(WALL + OBJECT_EXTENT, self.layout.length - WALL - OBJECT_EXTENT)
        angle = self.rng.uniform(0.0, 2 * math.pi)
        kind = list(CENTRED_OBJECT_SHAPES)[self.rng.integers(len(CENTRED_OBJECT_SHAPES))]
        colour_name = list(OBJECT_COLOURS)[self.rng.integers(len(OBJECT_COLOURS))]
        body = pymunk.Body(OBJECT_MASS, OBJECT_MOMENT)
        body.position = (x, y)
        body.angle = angle
        shape = pymunk.Poly(body, [tuple(v) for v in CENTRED_OBJECT_SHAPES[kind]])
        shape.elasticity = OBJECT_ELASTICITY
        shape.friction = OBJECT_FRICTION
        self.space.add(body, shape)
        return ArenaObject(kind, OBJECT_COLOURS[colour_name], body, shape)

    # -------------------------------------------------------------------------------------------- step

    def step_frame(self, heading: float, force: float) -> int:
        """Advance one frame (1/60 s) under the agent's action; return the number of objects returned.

        `heading` in radians (0 = +x, pi/2 = +y i.e. down), `force` in [0, MAX_FORCE].
        """
        for distractor in self.distractors:
            if distractor.frames_left == 0:
                # upstream's action sampler: whole degrees, force U[0, MAX_FORCE)
                distractor.heading = int(self.rng.integers(0, 360)) * math.pi / 180
                distractor.force = MAX_FORCE * self.rng.random()
                distractor.frames_left = int(self.rng.integers(*DISTRACTOR_HOLD))
            distractor.frames_left -= 1
            magnitude = distractor.force * DISTRACTOR_FORCE_SCALE * FORCE_REPEATS
            self._push(distractor.body, distractor.heading, magnitude, DISTRACTOR_RADIUS)
        self._push(self.agent, heading, force * FORCE_REPEATS, AGENT_RADIUS)
        self.space.step(1.0 / FPS)
        return self._after_step()

    def _push(self, body: pymunk.Body, heading: float, magnitude: float, radius: float) -> None:
        # Fix: the force acts at the centre of gravity, in world axes (upstream applied it at the world point
        # (x, x), which adds a large spurious torque). Setting the body's force accumulator does exactly that;
        # Chipmunk clears it after every step.
        body.force = (math.cos(heading) * magnitude, math.sin(heading) * magnitude)
        # The agent and the distractors may not enter the goal slot: put them back on the line (upstream
        # checks before the physics step, as here).
        limit = self.layout.goal_x - radius
        x, y = body.position
        if x > limit:
            body.position = (limit, y)
            body.velocity = -GOAL_BOUNCE * body.velocity

    def _after_step(self) -> int:
        """Cap object speeds and remove the objects past the goal line; return how many were removed."""
        vanishing_x = self.layout.goal_x + SCORE_MARGIN
        count = 0
        for item in self.objects:
            if not item.alive:
                continue
            # Upstream capped the speed in a Python velocity callback, i.e. before the position update of
            # the same step; the callback cost ~40% of the physics time, so we cap right after the step.
            # The position then moves with the uncapped speed for one frame (1% of 1/60 s of motion).
            velocity = item.body.velocity
            if velocity.length > OBJECT_MAX_SPEED:
                item.body.velocity = velocity * 0.99
            if item.body.position.x >= vanishing_x:
                self.space.remove(item.body, item.shape)
                item.alive = False
                count += 1
        self.returned += count
        return count

    # ------------------------------------------------------------------------------------------- state

    @property
    def all_returned(self) -> bool:
        return all(not item.alive for item in self.objects)

    def drawables(self, region: tuple[float, float, float, float] | None = None):
        """The moving shapes in drawing order (agent, distractors, objects), as upstream's debug draw.

        Each entry is ("circle", [cx, cy, r], colour) or ("polygon", (n, 2) world vertices, colour). With a
        region (x0, y0, x1, y1), shapes that cannot reach into it are left out (cheap culling for the view).
        """
        candidates = [("circle", self.agent, None, AGENT_RADIUS, AGENT_COLOUR)]
        for distractor in self.distractors:
            kite = ("polygon", distractor.body, CENTRED_DISTRACTOR, DISTRACTOR_EXTENT, DISTRACTOR_COLOUR)
            candidates.append(kite)
        for item in self.objects:
            if item.alive:
                local = CENTRED_OBJECT_SHAPES[item.kind]
                candidates.append(("polygon", item.body, local, OBJECT_EXTENT, item.colour))
        shapes = []
        for kind, body, local, extent, colour in candidates:
            x, y = body.position
            if region is not None:
                x0, y0, x1, y1 = region
                if not (x0 - extent <= x <= x1 + extent and y0 - extent <= y <= y1 + extent):
                    continue
            if kind == "circle":
                shapes.append((kind, np.array([x, y, extent]), colour))
            else:
                cos, sin = math.cos(body.angle), math.sin(body.angle)
                rotation = np.array([[cos, sin], [-sin, cos]])  # row vectors: v @ R rotates v by the angle
                shapes.append((kind, local @ rotation + np.array([x, y]), colour))
        return shapes
