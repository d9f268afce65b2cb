"""Golden trajectories of BringBackShapes physics: free flight and pushing a square.

The expected numbers come from a numpy re-derivation of the upstream update written here, independent of
tasks/bbs. Upstream (arnavkj1995/BBS `twod_playground/arena.py`, vsg_bbs.md) runs pymunk 6.2 (Chipmunk 7)
with gravity 0, `space.damping = 0.7`, one `space.step(1/60)` per frame, and per frame adds the action's
force `(cos a, sin a) * f` 100 times before the step. Chipmunk's step, in its order:

1. positions move with the velocities of the previous step (plus the contact bias velocity):
   p <- p + (v + v_bias) dt, then v_bias <- 0;
2. contacts are found at the new positions;
3. velocities: v <- v * damping**dt + F / m dt (forces are then cleared);
4. contact impulses (elasticity = product of the shapes' = 0 for the agent): an approaching pair gets the
   impulse that zeroes the normal relative velocity, and a penetration deeper than the slop (0.1) gets a
   bias velocity that removes 1 - 0.9**(60 dt) = 10% of it per frame through the next position update.

A head-on push of an axis-aligned square by a force through both centres is one-dimensional: no torque, no
tangential slip (so friction does nothing), one contact, and the iterative solver's first iteration is
already exact. The agent's mass is the disc's: upstream sets `mass = 10` and then `density = 0.1` on the
circle, and the density wins when the shape is added (checked below with pymunk itself).
"""

import math

import numpy as np
import pymunk
import pytest

from tasks.bbs.env import BBSProtocol, BringBackShapes

DT = 1 / 60
DAMPING = 0.7  # per second (vsg_bbs.md)
FORCE_REPEATS = 100  # upstream FRAMESKIP: the force is added 100 times per frame
MAX_FORCE = 400.0
AGENT_RADIUS = 15.0
AGENT_MASS = 0.1 * math.pi * AGENT_RADIUS**2  # density 0.1 x disc area
OBJECT_MASS = 20.0
SQUARE_HALF = 25.0  # the 50 px square, about its centre
# Chipmunk's defaults (cpSpaceInit), float literals in C: collisionSlop 0.1f, collisionBias pow(1 - 0.1f, 60)
SLOP = float(np.float32(0.1))
BIAS = 1.0 - (float(np.float32(0.9)) ** 60) ** DT
FRAMES_PER_STEP = 4  # the env's action repeat


def env_with_one(kind: str) -> BringBackShapes:
    """An empty arena (no distractors) whose single object is a `kind`, found by seed."""
    env = BringBackShapes(BBSProtocol(num_objects=1, num_distractors=0, arena_scale=1.0))
    for seed in range(200):
        env.reset(seed=seed)
        if env.arena.objects[0].kind == kind:
            return env
    raise AssertionError(f"no seed below 200 spawns a {kind}")


def place(body, position, angle=0.0):
    body.position = position
    body.angle = angle
    body.velocity = (0.0, 0.0)
    body.angular_velocity = 0.0


def physics_of(action):
    """The policy's [-1, 1]^2 -> (heading, force) as published: linear onto [0, 2 pi] x [0, 400]."""
    a0, a1 = (float(np.float32(v)) for v in action)
    return (a0 + 1.0) * math.pi, (a1 + 1.0) / 2.0 * MAX_FORCE


def test_upstream_agent_mass_is_the_disc_mass():
    space = pymunk.Space()
    body = pymunk.Body(body_type=pymunk.Body.DYNAMIC)
    body.mass, body.moment = 10, 1e6  # upstream's create_agent, in its order
    shape = pymunk.Circle(body, AGENT_RADIUS)
    shape.density = 0.1
    space.add(body, shape)
    assert body.mass == pytest.approx(AGENT_MASS, rel=1e-12)


# Headings along both axes and in between, full and partial forces, and coasting (force 0).
FREE_FLIGHT = [(-1.0, 1.0), (-0.5, 0.5), (0.25, 1.0), (0.75, -0.5), (0.0, -1.0), (0.5, 0.0), (-0.75, 1.0)]


def test_free_flight_matches_the_upstream_integrator():
    env = env_with_one("square")
    place(env.arena.agent, (400.0, 350.0))
    place(env.arena.objects[0].body, (180.0, 520.0))  # out of the way
    position, velocity = np.array([400.0, 350.0]), np.zeros(2)
    for action in FREE_FLIGHT:
        obs = env.step({"action": np.array(action, np.float32)})
        heading, force = physics_of(action)
        acceleration = FORCE_REPEATS * force * np.array([math.cos(heading), math.sin(heading)]) / AGENT_MASS
        for _ in range(FRAMES_PER_STEP):
            position = position + velocity * DT  # semi-implicit Euler: the old velocity moves the body
            velocity = velocity * DAMPING**DT + acceleration * DT
        agent = env.arena.agent
        np.testing.assert_allclose(tuple(agent.position), position, rtol=0, atol=1e-9)
        np.testing.assert_allclose(tuple(agent.velocity), velocity, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(obs["priv_state"][:4], np.r_[position, velocity], rtol=1e-6)
        assert agent.angular_velocity == 0.0  # the force acts at the centre (upstream's (x, x) point spun it)
    # the sequence went somewhere: ~ 10 px from the start, ~ 41 px/s at the end
    assert np.linalg.norm(position - [400.0, 350.0]) > 5 and np.linalg.norm(velocity) > 30


def push_reference(gap: float, actions) -> list[tuple[float, float, float, float]]:
    """1-D head-on push (x only): agent at 0 with the square's left face `gap` px ahead of its rim.

    Returns (agent x, agent v, square x, square v) after every agent step, both starting at rest.
    """
    k = 1 / AGENT_MASS + 1 / OBJECT_MASS  # inverse of the contact's effective mass
    xa, va, bias_a = 0.0, 0.0, 0.0
    xs, vs, bias_s = AGENT_RADIUS + gap + SQUARE_HALF, 0.0, 0.0
    out = []
    for action in actions:
        heading, force = physics_of(action)
        assert heading == 0.0  # pushes along +x only
        for _ in range(FRAMES_PER_STEP):
            xa, xs = xa + (va + bias_a) * DT, xs + (vs + bias_s) * DT
            bias_a = bias_s = 0.0
            dist = (xs - SQUARE_HALF) - (xa + AGENT_RADIUS)  # < 0: penetration
            va = va * DAMPING**DT + FORCE_REPEATS * force / AGENT_MASS * DT
            vs = vs * DAMPING**DT
            if dist <= 0:
                approach = vs - va
                if approach < 0:  # perfectly inelastic: the pair moves on at the common velocity
                    impulse = -approach / k
                    va, vs = va - impulse / AGENT_MASS, vs + impulse / OBJECT_MASS
                separation = -BIAS * min(0.0, dist + SLOP) / DT
                if separation > 0:
                    impulse = separation / k
                    bias_a, bias_s = -impulse / AGENT_MASS, impulse / OBJECT_MASS
        out.append((xa, va, xs, vs))
    return out


def test_pushing_a_square_matches_the_upstream_contact_solver():
    env = env_with_one("square")
    start, gap = np.array([300.0, 350.0]), 10.0
    square = env.arena.objects[0].body
    place(env.arena.agent, tuple(start))
    place(square, (start[0] + AGENT_RADIUS + gap + SQUARE_HALF, start[1]))
    actions = [(-1.0, 1.0)] * 8 + [(-1.0, 0.0)] * 2 + [(-1.0, -1.0)] * 3  # full force, half, then coast
    expected = push_reference(gap, actions)
    for action, (xa, va, xs, vs) in zip(actions, expected):
        env.step({"action": np.array(action, np.float32)})
        agent = env.arena.agent
        assert agent.position.x - start[0] == pytest.approx(xa, abs=1e-7)
        assert agent.velocity.x == pytest.approx(va, rel=1e-9, abs=1e-9)
        assert square.position.x - start[0] == pytest.approx(xs, abs=1e-7)
        assert square.velocity.x == pytest.approx(vs, rel=1e-9, abs=1e-9)
        # head-on through both centres: nothing moves sideways or turns
        assert agent.position.y == pytest.approx(start[1], abs=1e-9)
        assert square.position.y == pytest.approx(start[1], abs=1e-9)
        assert abs(square.angular_velocity) < 1e-12 and abs(agent.angular_velocity) < 1e-12
    xa, va, xs, vs = expected[-1]
    assert xs > AGENT_RADIUS + gap + SQUARE_HALF + 50  # the square was pushed ~ 90 px ...
    assert va == pytest.approx(vs) and vs > 100  # ... and rides along with the agent
    assert 0 < (xa + AGENT_RADIUS) - (xs - SQUARE_HALF) < 1.0  # resting in contact, the overlap near the slop
