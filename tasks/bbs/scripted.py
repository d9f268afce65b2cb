"""A scripted BringBackShapes policy that reads `priv_state`: it shows the task is solvable and calibrates
score normalisation. Registered as the agent `bbs_scripted`; it never trains (`streams()` is empty).

Each step (stateless, so it is jitted and batched like any agent's `act`):

1. Aim every remaining shape at the slot if it is level with it, else at a staging point in front of
   the slot; the "behind" point lies on the far side of the shape from its aim, clipped to where the
   agent fits. Shapes that the agent cannot get behind (pressed against a wall on the wrong side) are
   left for last.
2. Take the nearest remaining shape. Walk to its behind point, circling around the shape when the
   straight way passes it (the shorter way round unless a wall blocks it); once behind it and on the
   push line, push through its centre.
3. A velocity controller turns the wanted velocity into the action: the heading and force on the agent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from bench.api import AbstractAgent, AgentSpec
from bench.spaces import Space
from tasks.bbs.arena import AGENT_DENSITY, AGENT_RADIUS, FORCE_REPEATS, MAX_FORCE, WALL
from tasks.bbs.env import PRIV_STATE_FIXED, priv_state_layout

AGENT_MASS = math.pi * AGENT_RADIUS**2 * AGENT_DENSITY
MAX_PUSH = MAX_FORCE * FORCE_REPEATS  # the force on the agent at action[1] = 1


@dataclasses.dataclass(frozen=True)
class ScriptedConfig:
    standoff: float = 50.0  # px from a shape's centre to the agent's centre behind it
    approach_speed: float = 300.0  # px/s while walking to the behind point
    push_speed: float = 150.0  # px/s while pushing
    clearance: float = 55.0  # px kept between the agent's centre and the shape's while walking around it
    orbit_step: float = 0.7  # radians per waypoint when walking around the shape
    slow_radius: float = 40.0  # px: the wanted speed shrinks linearly inside this distance of a waypoint
    align_tolerance: float = 12.0  # px off the push line at which pushing starts
    goal_depth: float = 60.0  # px past the goal line that shapes are pushed towards
    slot_margin: float = 35.0  # px kept from the slot's top and bottom when aiming
    wall_margin: float = 3.0  # px kept between the agent and the walls
    min_standoff_fraction: float = 0.6  # a shape whose reachable behind point is closer is left for last
    staging_distance: float = 80.0  # px before the goal line where shapes not level with the slot go first
    velocity_gain: float = 8.0  # 1/s: force = mass * gain * (wanted velocity - velocity)


def _unit(vector):
    return vector / jnp.maximum(jnp.linalg.norm(vector), 1e-6)


def plan(config: ScriptedConfig, num_objects: int, priv_state) -> dict:
    """The policy's reasoning for one environment: target shape, behind point, waypoint, wanted velocity."""
    slices = priv_state_layout(num_objects)
    agent = priv_state[slices["agent_position"]]
    velocity = priv_state[slices["agent_velocity"]]
    objects = priv_state[slices["object_positions"]].reshape(num_objects, 2)
    alive = priv_state[slices["object_alive"]] > 0.5
    goal_x, goal_top, goal_bottom = priv_state[slices["goal"]]
    length = priv_state[slices["arena_size"]][1]

    # Where each shape should go: a shape level with the slot goes straight in; any other first to a
    # staging point in front of the slot (pushing it straight at the slot slides it along a wall into the
    # corner beside the slot, where no push can free it).
    aim_y = jnp.clip(objects[:, 1], goal_top + config.slot_margin, goal_bottom - config.slot_margin)
    level_with_slot = jnp.abs(objects[:, 1] - aim_y) < 1.0
    aim_x = jnp.where(level_with_slot, goal_x + config.goal_depth, goal_x - config.staging_distance)
    aims = jnp.stack([aim_x, aim_y], axis=-1)
    # The reachable point behind each shape (clipped to where the agent fits, so a shape near a wall is
    # pushed along it). If clipping brings it close to the shape, the agent cannot get behind: the shape
    # sits against a wall, on the wrong side.
    inset = WALL + AGENT_RADIUS + config.wall_margin
    low = jnp.array([inset, inset])
    high = jnp.stack([goal_x - AGENT_RADIUS - config.wall_margin, length - inset])
    directions = (aims - objects) / jnp.maximum(jnp.linalg.norm(aims - objects, axis=-1, keepdims=True), 1e-6)
    behinds = jnp.clip(objects - directions * config.standoff, low, high)
    pushable = jnp.linalg.norm(objects - behinds, axis=-1) > config.min_standoff_fraction * config.standoff

    # The nearest remaining shape, leaving those that cannot be pushed towards their aim for last.
    distance = jnp.linalg.norm(objects - agent, axis=-1) + jnp.where(pushable, 0.0, 1e4)
    target = jnp.argmin(jnp.where(alive, distance, jnp.inf))
    shape, behind = objects[target], behinds[target]
    push = _unit(shape - behind)

    # Walk to the behind point; if the straight way passes the shape, circle around it at `clearance`,
    # turning the shorter way unless that way is blocked by a wall.
    clearance = config.clearance
    to_behind = behind - agent
    t = jnp.clip((shape - agent) @ to_behind / jnp.maximum(to_behind @ to_behind, 1e-6), 0.0, 1.0)
    path_blocked = jnp.linalg.norm(agent + t * to_behind - shape) < clearance
    angle_agent = jnp.arctan2(agent[1] - shape[1], agent[0] - shape[0])
    angle_behind = jnp.arctan2(behind[1] - shape[1], behind[0] - shape[0])
    turn = jnp.mod(angle_behind - angle_agent + jnp.pi, 2 * jnp.pi) - jnp.pi  # in [-pi, pi)

    def orbit_point(direction):
        angle = angle_agent + direction * config.orbit_step
        return shape + clearance * jnp.stack([jnp.cos(angle), jnp.sin(angle)])

    preferred = jnp.where(turn >= 0, 1.0, -1.0)
    first, second = orbit_point(preferred), orbit_point(-preferred)
    first_blocked = jnp.linalg.norm(jnp.clip(first, low, high) - first) > 0.5 * clearance
    orbit = jnp.where(first_blocked, second, first)
    waypoint = jnp.clip(jnp.where(path_blocked, orbit, behind), low, high)
    to_waypoint = waypoint - agent
    approach = _unit(to_waypoint) * config.approach_speed
    approach = approach * jnp.minimum(1.0, jnp.linalg.norm(to_waypoint) / config.slow_radius)

    offset = agent - shape
    along = offset @ push  # < 0 behind the shape
    lateral = offset @ jnp.array([-push[1], push[0]])
    aligned = (along < -0.5 * config.standoff) & (along > -1.5 * config.standoff)
    aligned = aligned & (jnp.abs(lateral) < config.align_tolerance)
    pushing = _unit(shape + push * config.standoff - agent) * config.push_speed
    wanted = jnp.where(aligned, pushing, approach)
    wanted = jnp.where(jnp.any(alive), wanted, jnp.zeros(2))
    return {"shape": shape, "behind": behind, "waypoint": waypoint, "aligned": aligned, "wanted": wanted,
            "velocity": velocity}


def scripted_action(config: ScriptedConfig, num_objects: int, priv_state):
    """One environment's action (2,) in [-1, 1] from its priv_state (see tasks.bbs.env for the layout)."""
    thought = plan(config, num_objects, priv_state)
    wanted, velocity = thought["wanted"], thought["velocity"]
    force = AGENT_MASS * config.velocity_gain * (wanted - velocity)
    heading = jnp.mod(jnp.arctan2(force[1], force[0]), 2 * jnp.pi)
    magnitude = jnp.minimum(jnp.linalg.norm(force), MAX_PUSH)
    action = jnp.stack([heading / jnp.pi - 1.0, magnitude / MAX_PUSH * 2.0 - 1.0])
    return jnp.clip(action, -1.0, 1.0)


class ScriptedAgent(AbstractAgent):
    config: ScriptedConfig
    obs_space: Mapping[str, Space]
    act_space: Mapping[str, Space]

    def __check_init__(self):
        if "priv_state" not in self.obs_space:
            raise ValueError("bbs_scripted needs the observation key 'priv_state' (only bbs tasks have it)")
        size = self.obs_space["priv_state"].shape[0] - PRIV_STATE_FIXED
        if size <= 0 or size % 3:
            shape = self.obs_space["priv_state"].shape
            raise ValueError(f"bbs_scripted: priv_state of shape {shape} is not a bbs state")

    @property
    def num_objects(self) -> int:
        return (self.obs_space["priv_state"].shape[0] - PRIV_STATE_FIXED) // 3

    def init(self, *, key):
        return {}

    def initial_carry(self, state, batch_size: int):
        return {}

    def act(self, state, carry, obs, *, key, mode: str):
        policy = jax.vmap(lambda priv: scripted_action(self.config, self.num_objects, priv))
        return carry, {"action": policy(jnp.asarray(obs["priv_state"], jnp.float32))}, {}

    def update(self, state, stream: str, batch, *, key):
        return state, {}, {}

    def report(self, state, batch, *, key):
        return {}

    def streams(self):
        return {}


def make(config: ScriptedConfig, obs_space, act_space) -> ScriptedAgent:
    return ScriptedAgent(config, dict(obs_space), dict(act_space))


SPEC = AgentSpec(
    name="bbs_scripted",
    config_cls=ScriptedConfig,
    make=make,
    description="Scripted BringBackShapes policy from the privileged state: push the nearest shape home.",
)
