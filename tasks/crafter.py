"""Crafter (Hafner 2021): open-world survival with 22 achievements, under the published benchmark protocol.

* 64x64 RGB (the package's own renderer: 9x9 local view including the inventory rows), 17 actions.
* Reward as published: +1 the first time each achievement is unlocked in an episode, -0.1 per health
  point lost, +0.1 per health point regained.
* Episodes end when the player dies (terminal) or after 10000 steps (truncation).
* Budget: 1M agent steps, the Crafter paper's protocol and scoreboard. DreamerV3's configs run 1.1e6
  steps; we keep the benchmark's 1M so scores compare with the scoreboard (override `run.steps` for more).
* Score fields: `achievement_<name>` = 1.0 if the achievement was unlocked in the episode, else 0.0.
  The suite's score is the Crafter score (`crafter_score`) over all training episodes of the budget.

Every episode is seeded: a fresh `crafter.Env(seed=episode_seed)` generates its world from
hash((seed, 1)), and all in-game randomness comes from that world's generator.

The package alone is not deterministic for a given seed and actions: its world keeps each chunk's objects in
a `set`, which iterates in memory-address order, and despawning picks a creature by index into that order.
So two runs (or a run and its resume by replay) diverge. `DeterministicWorld` keeps the chunks' objects in
insertion order instead; nothing else about the game changes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action
from tasks import wrappers

# The 22 achievements in the package's order (crafter.constants.achievements, checked by a test).
ACHIEVEMENTS = (
    "collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling", "collect_stone",
    "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow", "eat_plant", "make_iron_pickaxe",
    "make_iron_sword", "make_stone_pickaxe", "make_stone_sword", "make_wood_pickaxe", "make_wood_sword",
    "place_furnace", "place_plant", "place_stone", "place_table", "wake_up",
)  # fmt: skip
SCORE_FIELDS = tuple(f"achievement_{name}" for name in ACHIEVEMENTS)
NUM_ACTIONS = 17


@dataclasses.dataclass(frozen=True)
class CrafterProtocol:
    image_size: int = 64  # rendered observation side in pixels
    episode_length: int = 10_000  # truncation limit in steps
    world_area: int = 64  # world side in cells
    view: int = 9  # local view side in cells (the bottom rows show the inventory)
    reward: bool = True  # False = reward-free Crafter (scores still count achievements)

    def __post_init__(self):
        wrappers.require_positive(self, "image_size", "episode_length", "world_area")
        wrappers.require(self.view >= 3, self, "view", "must be at least 3 cells")


class InsertionOrderedSet:
    """The set operations crafter's World uses on a chunk (add, remove, iterate, len), in insertion order."""

    def __init__(self):
        self._items: dict = {}

    def add(self, item) -> None:
        self._items[item] = None

    def remove(self, item) -> None:
        del self._items[item]

    def __contains__(self, item) -> bool:
        return item in self._items

    def __iter__(self):
        return iter(list(self._items))  # a snapshot: callers may add or remove while iterating

    def __len__(self) -> int:
        return len(self._items)


@functools.cache
def deterministic_world_class():
    """crafter's World with insertion-ordered chunks (defined on first use: crafter is imported lazily)."""
    from crafter import engine

    class DeterministicWorld(engine.World):
        def reset(self, seed=None):
            engine.World.reset(self, seed)
            self._chunks = collections.defaultdict(InsertionOrderedSet)

    return DeterministicWorld


def make_deterministic(world) -> None:
    """Turn a `crafter.engine.World` into a DeterministicWorld in place (the env's views hold the world)."""
    cls = deterministic_world_class()
    if type(world) not in (cls.__base__, cls):
        raise TypeError(f"expected a crafter.engine.World, got {type(world).__name__}")
    world.__class__ = cls


class CrafterEnv(Env):
    def __init__(self, protocol: CrafterProtocol = CrafterProtocol()):
        import crafter  # noqa: F401  (fail at construction, not at the first reset, if it is missing)

        self.protocol = protocol
        self._obs_space = {"image": spaces.image(protocol.image_size, protocol.image_size), **spaces.step_spaces()}
        self._act_space = {"action": spaces.discrete(NUM_ACTIONS)}
        self._guard = wrappers.EpisodeGuard("crafter")
        self._env = None
        self._achievements: dict[str, int] = {}

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    def reset(self, *, seed: int):
        import crafter

        seed = wrappers.check_seed(seed)
        p = self.protocol
        # A new Env per episode: its world seed is hash((seed, episode counter = 1)), a function of our seed
        # alone (Python does not randomise int hashes). Construction costs ~50 ms against a ~0.5 s worldgen.
        self._env = crafter.Env(
            area=(p.world_area, p.world_area),
            view=(p.view, p.view),
            size=(p.image_size, p.image_size),
            reward=p.reward,
            length=p.episode_length,
            seed=seed,
        )
        make_deterministic(self._env._world)  # before reset: the world generator already adds objects
        image = self._env.reset()
        self._achievements = {name: 0 for name in ACHIEVEMENTS}
        self._guard.start()
        return wrappers.step_obs({"image": image}, 0.0, is_first=True, is_last=False, is_terminal=False)

    def step(self, action):
        self._guard.check_step()
        index = int(check_action(self._act_space, action)["action"])
        image, reward, done, info = self._env.step(index)
        self._achievements = dict(info["achievements"])
        terminal = info["discount"] == 0  # the player died; the step limit is a truncation
        self._guard.finish(bool(done))
        return wrappers.step_obs({"image": image}, reward, is_first=False, is_last=bool(done), is_terminal=terminal)

    def episode_stats(self) -> dict[str, float]:
        return {f"achievement_{name}": float(self._achievements.get(name, 0) > 0) for name in ACHIEVEMENTS}

    def render(self):
        return None if self._env is None else self._env.render()


def make_env(task: str, protocol: CrafterProtocol, worker_index: int = 0) -> CrafterEnv:
    del task, worker_index  # one task; episodes are seeded by reset(seed=...)
    return CrafterEnv(protocol)


# ------------------------------------------------------------------------------------------- scoring


def achievement_success_rates(episodes: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Success rate in percent of each achievement over episodes.

    Each episode is a mapping with the 22 `achievement_<name>` fields of the scores file (values > 0 mean
    unlocked); missing fields are an error rather than a silent zero.
    """
    episodes = list(episodes)
    if not episodes:
        raise ValueError("the Crafter score needs at least one episode")
    unlocked = np.zeros(len(ACHIEVEMENTS))
    for index, episode in enumerate(episodes):
        missing = [field for field in SCORE_FIELDS if field not in episode]
        if missing:
            raise ValueError(f"episode {index} lacks achievement fields: {', '.join(missing)}")
        unlocked += [float(episode[field]) > 0 for field in SCORE_FIELDS]
    return {name: 100.0 * count / len(episodes) for name, count in zip(ACHIEVEMENTS, unlocked)}


def crafter_score(episodes: Iterable[Mapping[str, float]]) -> float:
    """The Crafter score in percent: exp(mean_i ln(1 + s_i)) - 1 over the 22 success rates s_i (percent).

    A geometric mean that rewards unlocking rare achievements; 0 when nothing is ever unlocked, 100 when
    every episode unlocks everything.
    """
    rates = achievement_success_rates(episodes)
    return math.exp(sum(math.log(1.0 + rate) for rate in rates.values()) / len(rates)) - 1.0


SUITE = SuiteSpec(
    name="crafter",
    tasks=("crafter",),
    protocol_cls=CrafterProtocol,
    make_env=make_env,
    budget=1_000_000,
    eval_protocol="crafter_score",
    score_fields=SCORE_FIELDS,
    normaliser="crafter",
    description="Crafter: 22 achievements, 1M agent steps, Crafter score over all training episodes.",
    task_aliases={"crafter_reward": "crafter", "reward": "crafter"},  # DreamerV3 calls it crafter_reward
)
