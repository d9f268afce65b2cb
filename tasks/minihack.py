"""MiniHack tasks of THICK (Gumbsch et al., ICLR 2024), with our own level files.

Observation: MiniHack's `pixel_crop`, the 5x5 tiles around the player (16x16 pixels each, so 80x80),
resized to 64x64 with nearest-neighbour sampling.

Success, two score fields (both reduced to a success rate):

* `success` (ours, what the leaderboard scores): the episode reached the goal (MiniHack paid `reward_win`).
* `success_thick`: THICK's rule, a step reward >= 1 in THICK's env (its SuccessWrapper). There MiniHack adds
  its constant `penalty_step` (-0.01) to every key press that leaves the game clock unchanged, the winning
  one included, so a win whose last move takes no game time (intrinsically fast roles) pays 0.99 and THICK
  does not count it. Report this field beside ours when comparing with THICK's numbers.

The levels follow THICK's published maps cell by cell (geometry, terrain, object and monster placement,
flags; see `tests/test_minihack_levels.py`): the 2-row key corridors with the blessed Master Key of
Thievery in the far corner, the 9x9 escape rooms, the one-cell lava river, and miniwod with autopickup
off, so the wand must be picked up (as in THICK, whose miniwod is a MiniHackSkill env).

| task                        | level (ours)            | actions                          | steps |
|-----------------------------|-------------------------|----------------------------------|-------|
| keycorridor{2,4..12}        | levels/keycorridorN.des | north east south west pickup apply | 200 |
| keyroomfixed5               | MiniHack-KeyRoom-Fixed-S5-v0 | north east south west pickup apply | 200 |
| river                       | MiniHack-River-v0       | north east south west            | 400   |
| miniwod                     | levels/miniwod.des      | north east south west pickup zap eat | 400 |
| escaperoom, escaperoomwater | levels/escaperoom*.des  | north east south west pickup apply | 400 |
| lavacrossing, watercrossing | levels/*crossing.des    | north east south west pickup     | 200   |

Composite actions (as in THICK's wrappers, each one agent step):

* `apply` with a key next to a closed door unlocks and opens it (MiniHack's KeyDoor behaviour).
* `pickup` of a ring of levitation also puts it on. In the escape rooms the player carries one item at a
  time: picking up the other item first takes off the ring (if worn) and drops the item carried.
* `zap` with a wand in the inventory zaps it; the next action answers "In what direction?" (moves give
  the direction). `eat` is an alias of `zap`, kept so the action count matches THICK's 7-action miniwod.
* Any other question the game asks at the end of an action is declined (MiniHack's default).

Rewards: +1 on reaching the stairs (the episode ends, terminal), `reward_lose` on death (-0.1 in
lavacrossing, else 0), and `penalty_step` (-0.01, MiniHack's constant penalty) for an agent step in which
the game clock did not advance (bumping into walls, declined commands). The penalty is charged once per
agent step rather than per key press of a composite action. Time limits are truncations.

Level files are package data in tasks/levels; MiniHack requires the level name "mylevel" in their MAZE line.

Seeding: before every reset NetHack's core, display and level-generator RNGs are seeded from the episode
seed, so layout and game are a function of (seed, actions).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action
from tasks import wrappers

MOVES = ("north", "east", "south", "west")
KEY_ACTIONS = MOVES + ("pickup", "apply")
# MiniHack's default penalty_step, which THICK's env keeps: the reward of a key press that leaves the game
# clock unchanged (added to reward_win on a win; see `success_thick`). Fixed, whatever our protocol charges.
THICK_PENALTY_STEP = -0.01


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    builder: str  # "keydoor" | "navigation" (our level through that MiniHack class) | "keyroom_fixed5" | "river"
    actions: tuple[str, ...]
    max_steps: int
    character: str  # role-race-alignment-gender, a valid NetHack combination
    level: str | None = None  # file in tasks/levels
    autopickup: bool = False
    reward_lose: float = 0.0
    single_item: bool = False  # escape rooms: one item at a time


TASKS: dict[str, TaskSpec] = {
    **{
        f"keycorridor{n}": TaskSpec("keydoor", KEY_ACTIONS, 200, "rog-hum-cha-mal", f"keycorridor{n}.des")
        for n in (2, 4, 5, 6, 7, 8, 9, 10, 11, 12)
    },
    "keyroomfixed5": TaskSpec("keyroom_fixed5", KEY_ACTIONS, 200, "rog-hum-cha-mal"),
    "river": TaskSpec("river", MOVES, 400, "arc-hum-neu-mal", autopickup=True),
    # THICK builds miniwod on MiniHackSkill, whose autopickup is off: the wand must be picked up (levels.md).
    "miniwod": TaskSpec(
        "navigation", MOVES + ("pickup", "zap", "eat"), 400, "val-hum-neu-fem", "miniwod.des", autopickup=False
    ),
    "escaperoom": TaskSpec("keydoor", KEY_ACTIONS, 400, "sam-hum-law-fem", "escaperoom.des", single_item=True),
    "escaperoomwater": TaskSpec(
        "keydoor", KEY_ACTIONS, 400, "sam-hum-law-fem", "escaperoomwater.des", single_item=True
    ),
    "lavacrossing": TaskSpec(
        "navigation", MOVES + ("pickup",), 200, "cav-hum-neu-fem", "lavacrossing.des", reward_lose=-0.1
    ),
    "watercrossing": TaskSpec("navigation", MOVES + ("pickup",), 200, "ran-hum-neu-fem", "watercrossing.des"),
}


@dataclasses.dataclass(frozen=True)
class MiniHackProtocol:
    image_size: int = 64  # observation side in pixels
    crop_tiles: int = 5  # side of the egocentric crop in tiles (odd)
    resize: str = "nearest"  # from the crop's 16 px tiles to image_size (see tasks.wrappers.RESIZE_METHODS)
    max_steps: int = 0  # episode limit in agent steps; 0 = the task's (200 or 400, see the table)
    penalty_step: float = -0.01  # reward for an agent step in which the game clock did not advance
    success_reward: float = 1.0  # a step reward at least this large marks the episode a success

    def __post_init__(self):
        wrappers.require_positive(self, "image_size", "crop_tiles")
        wrappers.require(self.crop_tiles % 2 == 1, self, "crop_tiles", "must be odd (the player is the centre)")
        wrappers.require(self.max_steps >= 0, self, "max_steps", "must be >= 0 (0 = the task's limit)")
        wrappers.require_choice(self, "resize", wrappers.RESIZE_METHODS)
        shrinks = self.image_size <= 16 * self.crop_tiles  # 16 px per tile
        wrappers.require(self.resize != "area" or shrinks, self, "resize", "'area' only shrinks the crop")


def level_text(name: str) -> str:
    """The text of a level file shipped in tasks/levels (package data, independent of the working dir)."""
    resource = importlib.resources.files("tasks.levels").joinpath(name)
    if not resource.is_file():
        raise FileNotFoundError(f"level file {name!r} is missing from the tasks.levels package data")
    return resource.read_text()


def _check_compiled(env, level: str):
    """MiniHack only prints lev_comp's errors and then plays a random dungeon level; fail loudly instead.

    Its patch script compiles the level into `<vardir>/lib/mylevel.lev` (the level must be named "mylevel"
    in the MAZE line); no such file means the compilation failed.
    """
    compiled = os.path.join(env.nethack._vardir, "lib", "mylevel.lev")
    if not os.path.isfile(compiled):
        env.close()
        raise RuntimeError(f"MiniHack could not compile tasks/levels/{level} (lev_comp's messages are above)")
    return env


class MiniHackEnv(Env):
    def __init__(self, task: str, protocol: MiniHackProtocol = MiniHackProtocol()):
        if task not in TASKS:
            raise KeyError(f"unknown MiniHack task {task!r}; tasks: {', '.join(TASKS)}")
        from nle import nethack

        self.task = task
        self.spec = TASKS[task]
        self.protocol = protocol
        self.max_steps = protocol.max_steps or self.spec.max_steps
        self._nethack = nethack
        keys = {
            "north": nethack.CompassDirection.N,
            "east": nethack.CompassDirection.E,
            "south": nethack.CompassDirection.S,
            "west": nethack.CompassDirection.W,
            "pickup": nethack.Command.PICKUP,
            "apply": nethack.Command.APPLY,
            "zap": nethack.Command.ZAP,
            "eat": nethack.Command.ZAP,  # THICK's miniwod maps its 7th action onto zap
        }
        self.actions = self.spec.actions
        self._primary_key = [int(keys[name]) for name in self.actions]
        # The inner env runs on the full keyboard so composite actions can answer NetHack's questions.
        self._key_index = {int(action): index for index, action in enumerate(nethack.ACTIONS)}
        self._env = self._build(nethack)
        self._obs_space = {"image": spaces.image(protocol.image_size, protocol.image_size), **spaces.step_spaces()}
        self._act_space = {"action": spaces.discrete(len(self.actions))}
        self._guard = wrappers.EpisodeGuard(f"minihack {task}")
        self._crop = None
        self._steps = 0
        self._success = False
        self._success_thick = False
        self._awaiting_direction = False  # a zap waits for its direction: the next action answers it
        # Accumulated over the key presses of one agent step (see _press).
        self._reward, self._done, self._truncated = 0.0, False, False

    def _build(self, nethack):
        spec = self.spec
        kwargs = dict(
            observation_keys=("pixel_crop", "inv_strs", "inv_letters", "blstats", "message"),
            obs_crop_h=self.protocol.crop_tiles,
            obs_crop_w=self.protocol.crop_tiles,
            actions=nethack.ACTIONS,
            # Our step limit truncates; the inner limit only bounds key presses (several per composite action).
            max_episode_steps=20 * self.max_steps,
            allow_all_yn_questions=True,  # we answer or decline questions ourselves (see step)
            allow_all_modes=False,
            autopickup=spec.autopickup,
            reward_win=1.0,
            reward_lose=spec.reward_lose,
            penalty_step=0.0,  # charged per agent step in step(), not per key press
            penalty_time=0.0,
        )
        if spec.builder in ("keydoor", "keyroom_fixed5"):
            from minihack.envs.keyroom import MiniHackKeyDoor, MiniHackKeyRoom5x5Fixed

            kwargs["charachter"] = spec.character  # (sic) MiniHackKeyDoor reads this misspelt keyword
            if spec.builder == "keyroom_fixed5":
                return MiniHackKeyRoom5x5Fixed(**kwargs)
            return _check_compiled(MiniHackKeyDoor(des_file=level_text(spec.level), **kwargs), spec.level)
        if spec.builder == "navigation":
            from minihack import MiniHackNavigation

            env = MiniHackNavigation(des_file=level_text(spec.level), character=spec.character, **kwargs)
            return _check_compiled(env, spec.level)
        if spec.builder == "river":
            from minihack.envs.river import MiniHackRiver

            return MiniHackRiver(character=spec.character, **kwargs)
        raise ValueError(f"unknown builder {spec.builder!r}")

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    # ------------------------------------------------------------------------------ NetHack state access

    def _raw(self, key: str) -> np.ndarray:
        # NLE keeps the full observation tuple of the last key press in `last_observation`, ordered like its
        # `_observation_keys` (nle 1.3.0, pinned); MiniHack's own KeyDoor helpers read it the same way.
        return self._env.last_observation[self._env._observation_keys.index(key)]

    def _asking(self) -> bool:
        """NetHack waits for a one-key answer (item letter, direction, y/n)."""
        return bool(self._raw("internal")[1])

    def _message(self) -> str:
        return bytes(self._raw("message")).rstrip(b"\0").decode("ascii", "replace")

    def _game_time(self) -> int:
        return int(self._raw("blstats")[self._nethack.NLE_BL_TIME])

    def _inventory(self) -> dict[str, str]:
        """Inventory letter -> item description."""
        items = {}
        for letter, line in zip(self._raw("inv_letters"), self._raw("inv_strs")):
            if letter == 0:
                break
            items[chr(letter)] = bytes(line).rstrip(b"\0").decode("ascii", "replace")
        return items

    def _find(self, word: str) -> str | None:
        return next((letter for letter, text in self._inventory().items() if word in text), None)

    def _ring_worn(self) -> bool:
        return any("ring" in text and "(on " in text for text in self._inventory().values())

    # ------------------------------------------------------------------------------------------ episodes

    def reset(self, *, seed: int):
        seed = wrappers.check_seed(seed)
        self._env.seed(
            wrappers.derive_seed(seed, "nle_core", 63),
            wrappers.derive_seed(seed, "nle_disp", 63),
            reseed=False,
            lgen=wrappers.derive_seed(seed, "nle_lgen", 63),
        )
        observation, _ = self._env.reset()
        self._crop = observation["pixel_crop"]
        self._steps = 0
        self._success = False
        self._success_thick = False
        self._awaiting_direction = False
        self._guard.start()
        return wrappers.step_obs(self._image(), 0.0, is_first=True, is_last=False, is_terminal=False)

    def step(self, action):
        self._guard.check_step()
        index = int(check_action(self._act_space, action)["action"])
        name = self.actions[index]
        self._reward, self._done, self._truncated = 0.0, False, False
        time_before = self._game_time()
        if self._awaiting_direction:  # this action answers the zap's "In what direction?"
            self._awaiting_direction = False
            self._press(self._primary_key[index])
        elif name == "pickup":
            self._pickup()
        elif name in ("zap", "eat"):
            self._zap()
        else:  # moves, and apply (MiniHack's KeyDoor opens an adjacent locked door with a carried key)
            self._press(self._primary_key[index])
        if not self._done and self._asking() and not self._awaiting_direction:
            self._press(int(self._nethack.Command.ESC))  # decline leftover questions, as MiniHack does
        reward = self._reward
        if not self._done and self._game_time() == time_before:
            reward += self.protocol.penalty_step
        self._steps += 1
        is_terminal = self._done
        is_last = self._done or self._truncated or self._steps >= self.max_steps
        self._guard.finish(is_last)
        return wrappers.step_obs(self._image(), reward, is_first=False, is_last=is_last, is_terminal=is_terminal)

    def episode_stats(self) -> dict[str, float]:
        return {"success": float(self._success), "success_thick": float(self._success_thick)}

    # ------------------------------------------------------------------------------- composite actions

    def _press(self, key: int) -> None:
        """One key press through MiniHack (reward, end of game, observation); nothing after the game ends."""
        if self._done:
            return
        observation, reward, terminated, truncated, _ = self._env.step(self._key_index[int(key)])
        self._crop = observation["pixel_crop"]
        self._reward += float(reward)
        if reward >= self.protocol.success_reward:
            self._success = True
        # The reward THICK's env pays for this press: ours (no inner step penalty) plus MiniHack's constant
        # penalty when the clock stood still (see the module docstring). NLE counts clock-frozen presses in
        # `_frozen_steps` (nle 1.3.0, pinned) while it computes the reward, before a won game is quit and
        # its observation blanked, so the count is right on the winning press too.
        frozen = self._env._frozen_steps > 0
        thick_reward = reward + (THICK_PENALTY_STEP if frozen else 0.0)
        if thick_reward >= 1.0:  # THICK's SuccessWrapper threshold
            self._success_thick = True
        self._done = bool(terminated)
        self._truncated = bool(truncated)

    def _answer(self, letter: str) -> None:
        if not self._done and self._asking():
            self._press(ord(letter))

    def _put_on_ring(self) -> None:
        ring = self._find("ring")
        if ring is None or self._ring_worn():
            return
        self._press(ord("P"))
        self._answer(ring)  # "What do you want to put on?"
        self._answer("r")  # "Which ring-finger, Right or Left?"

    def _pickup(self) -> None:
        nethack = self._nethack
        if not self.spec.single_item:
            self._press(int(nethack.Command.PICKUP))
            self._put_on_ring()
            return
        # Escape rooms: swap the carried item (ring or key) for the one on the floor, if there is one.
        # Looking costs no game time; levitating players see the floor but cannot reach it.
        self._press(int(nethack.Command.LOOK))
        if "You see here" not in self._message() or self._done:
            return
        carried = self._find("ring") or self._find("key")
        if self._ring_worn():
            self._press(ord("R"))  # take the ring off (lands the player; there is floor under an item)
            self._answer(self._find("ring"))
        before = set(self._inventory())
        self._press(int(nethack.Command.PICKUP))
        picked = set(self._inventory()) - before
        if picked and carried is not None and carried not in picked:
            self._press(int(nethack.Command.DROP))
            self._answer(carried)
        self._put_on_ring()

    def _zap(self) -> None:
        wand = self._find("wand")
        self._press(int(self._nethack.Command.ZAP))
        if wand is None:
            return  # "You don't have anything to zap."
        self._answer(wand)  # "What do you want to zap?"
        self._awaiting_direction = not self._done and self._asking() and "direction" in self._message()

    def _image(self) -> dict:
        return {"image": wrappers.resize_image(self._crop, self.protocol.image_size, self.protocol.resize)}

    def render(self):
        return None if self._crop is None else np.array(self._crop)

    def close(self):
        self._env.close()


def make_env(task: str, protocol: MiniHackProtocol, worker_index: int = 0) -> MiniHackEnv:
    del worker_index
    return MiniHackEnv(task, protocol)


SUITE = SuiteSpec(
    name="minihack",
    tasks=tuple(TASKS),
    protocol_cls=MiniHackProtocol,
    make_env=make_env,
    budget=1_000_000,  # THICK's configs (minihack, thick_minihack): steps 1e6, action repeat 1
    eval_protocol="success_rate",
    score_fields=("success", "success_thick"),
    normaliser="identity",
    description="THICK's MiniHack tasks (key corridors, escape rooms, crossings, miniwod, river), success rate.",
)
