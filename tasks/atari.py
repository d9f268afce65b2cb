"""Atari 100k: the 26 games under the world-model protocol (DreamerV3's, which IRIS, STORM and DIAMOND share).

Protocol (defaults = the published one, every choice a field of `AtariProtocol`, i.e. `env.*` in the config):

* 64x64 RGB, resized with PIL bilinear like DreamerV3 (2024); `resize="area"` is OpenCV's INTER_AREA, which
  DreamerV3's 2023 code used. Frame skip 4 with a max-pool over the last two frames of each agent step
  (removes Atari sprite flicker).
* Up to 30 no-op frames after reset, the count drawn uniformly from 0..30 (DreamerV3: `integers(noops + 1)`)
  from the episode seed. No sticky actions (repeat_action_probability 0). Minimal action set.
  DreamerV3's 2024 published runs had sticky actions at p = 0.25 (its wrapper set the probability after
  `loadROM`, which ALE ignores): `--env.sticky_actions 0.25` reproduces them, with ALE's semantics (each
  frame repeats the previously emitted action with that probability).
* Episodes are capped at 108k frames (27k agent steps); hitting the cap is a truncation (is_last without
  is_terminal). DreamerV3 upstream marks it terminal; we do not copy that.
* Lives are ignored (DreamerV3, Hieros). `life_loss_terminal=True` gives the IRIS/STORM/DIAMOND training
  signal: a step that loses a life has `is_terminal=True` while the game, and the episode, go on (STORM's
  semantics: the score stays the full-game return). So with this flag `is_terminal` can be set on a step
  that is not `is_last`; agents use it only as their continuation target.
* Rewards are not clipped. Budget 100k agent steps = 400k frames.
* Evaluation: `final_eval` (100 episodes after training; IRIS, DIAMOND, TWM, Hieros, rliable) or
  `train_window` (training episodes ending in the last 10k agent steps; DreamerV3). Scores are normalised
  with the human/random table ("human").

The emulator is `ale_py.ALEInterface` with frame_skip 1: we repeat, pool and count frames ourselves, so
every step is explicit. ROMs ship in the ale-py wheel. The episode is fully determined by its seed and the
actions: ALE's own reset is deterministic without sticky actions (checked in tests), no-ops and (optional)
sticky actions are drawn from the episode seed, never from ALE's internal generator.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action
from tasks import wrappers
from tasks.atari_games import GAMES

EVAL_PROTOCOLS = ("final_eval", "train_window")


@dataclasses.dataclass(frozen=True)
class AtariProtocol:
    image_size: int = 64  # square observation side in pixels
    grayscale: bool = False  # TWM and the DER/SPR lineage use grey; the world-model agents use RGB
    resize: str = "bilinear"  # bilinear (PIL; DreamerV3 2024), nearest (PIL), area (OpenCV INTER_AREA)
    action_repeat: int = 4  # frames per agent step (frame skip)
    max_pool: bool = True  # max over the last two frames of each agent step
    noops: int = 30  # at most this many no-op frames after reset, count uniform in 0..noops
    sticky_actions: float = 0.0  # repeat_action_probability: 100k protocol 0; DreamerV3 2024 ran 0.25
    full_action_space: bool = False  # False = the game's minimal action set
    life_loss_terminal: bool = False  # mark life loss as terminal (IRIS/STORM/DIAMOND training signal)
    episode_frames: int = 108_000  # truncation cap in frames, including the no-op frames
    # How a run reduces to its score: final_eval (the suite's 100 evaluation episodes after training; the count
    # is run.eval_episodes) | train_window (training episodes ending in the last eval_window agent steps).
    eval_protocol: str = "final_eval"
    # train_window: DreamerV3 scores the training episodes ending in the last 10k *frames* (390k-400k frames),
    # i.e. the last 2,500 agent steps at frame skip 4. (protocols.md's "10k agent steps" contradicts its own
    # frame range; the upstream scoring code uses the frame range.)
    eval_window: int = 2_500  # agent steps at the end of training whose episodes count (train_window)

    def __post_init__(self):
        wrappers.require_positive(self, "image_size", "action_repeat", "episode_frames")
        wrappers.require(self.noops >= 0, self, "noops", "must be >= 0")
        wrappers.require(0.0 <= self.sticky_actions < 1.0, self, "sticky_actions", "must be in [0, 1)")
        wrappers.require(self.eval_window >= 0, self, "eval_window", "must be >= 0")
        wrappers.require_choice(self, "resize", wrappers.RESIZE_METHODS)
        wrappers.require_choice(self, "eval_protocol", EVAL_PROTOCOLS)


class AtariEnv(Env):
    """One ALE emulator under `AtariProtocol`. Observation {"image"}, action {"action": index}."""

    def __init__(self, game: str, protocol: AtariProtocol = AtariProtocol()):
        if game not in GAMES:
            raise KeyError(f"unknown Atari 100k game {game!r}; games: {', '.join(GAMES)}")
        from ale_py import Action, ALEInterface, LoggerMode, roms

        ALEInterface.setLoggerMode(LoggerMode.Error)
        self.game = game
        self.protocol = protocol
        self._ale = ALEInterface()
        # ALE's generator would only drive its own sticky actions, which are off: we draw stickiness from the
        # episode seed instead, so a fixed ALE seed keeps every episode a function of (seed, actions).
        self._ale.setInt("random_seed", 0)
        self._ale.setFloat("repeat_action_probability", 0.0)
        self._ale.setInt("frame_skip", 1)
        self._ale.setInt("max_num_frames_per_episode", 0)  # we count frames and truncate ourselves
        self._ale.loadROM(str(roms.get_rom_path(game)))
        action_set = self._ale.getLegalActionSet() if protocol.full_action_space else self._ale.getMinimalActionSet()
        self._actions = list(action_set)
        self._noop = Action.NOOP
        height, width = self._ale.getScreenDims()
        # Two screen buffers for the max-pool. Both are filled on reset, so the first observation is a real
        # frame (DreamerV3's upstream bug: one buffer stayed black and the first observation was black).
        self._buffers = np.zeros((2, height, width, 3), np.uint8)
        channels = 1 if protocol.grayscale else 3
        self._obs_space = {
            "image": spaces.image(protocol.image_size, protocol.image_size, channels),
            **spaces.step_spaces(),
        }
        self._act_space = {"action": spaces.discrete(len(self._actions))}
        self._guard = wrappers.EpisodeGuard(f"atari {game}")
        self._rng = None
        self._frames = 0
        self._lives = 0
        self._previous_action = self._noop
        self._frame = self._buffers[0]

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    @property
    def action_names(self) -> list[str]:
        return [action.name for action in self._actions]

    def reset(self, *, seed: int):
        seed = wrappers.check_seed(seed)
        self._rng = wrappers.episode_rng(seed, "atari")
        self._ale.reset_game()
        self._frames = 0
        noops = int(self._rng.integers(self.protocol.noops + 1))
        for _ in range(noops):
            self._ale.act(self._noop, 1.0)
            self._frames += 1
            if self._ale.game_over():  # not seen in the 26 games; keeps the first step valid regardless
                self._ale.reset_game()
        self._previous_action = self._noop
        self._lives = self._ale.lives()
        self._ale.getScreenRGB(self._buffers[0])
        self._buffers[1] = self._buffers[0]
        self._frame = self._buffers[0]
        self._guard.start()
        return wrappers.step_obs(self._image(self._frame), 0.0, is_first=True, is_last=False, is_terminal=False)

    def step(self, action):
        self._guard.check_step()
        index = int(check_action(self._act_space, action)["action"])
        chosen = self._actions[index]
        repeat = self.protocol.action_repeat
        pooled = min(2 if self.protocol.max_pool else 1, repeat)
        captured = 0
        reward = 0.0
        game_over = False
        for frame in range(repeat):
            if self.protocol.sticky_actions and self._rng.random() < self.protocol.sticky_actions:
                emitted = self._previous_action  # ALE semantics: per frame, repeat the previous action
            else:
                emitted = chosen
            self._previous_action = emitted
            reward += self._ale.act(emitted, 1.0)  # strength 1.0 explicitly (ale-py 0.10's zero-strength bug)
            self._frames += 1
            if frame >= repeat - pooled:
                self._ale.getScreenRGB(self._buffers[captured])
                captured += 1
            game_over = self._ale.game_over()
            if game_over or self._frames >= self.protocol.episode_frames:
                break
        if captured == 0:  # the step ended before the pooled frames: use the screen as it is now
            self._ale.getScreenRGB(self._buffers[0])
            captured = 1
        frame = self._buffers[0] if captured == 1 else np.maximum(self._buffers[0], self._buffers[1])
        self._frame = frame
        lives = self._ale.lives()
        life_lost = lives < self._lives
        self._lives = lives
        is_last = game_over or self._frames >= self.protocol.episode_frames
        is_terminal = game_over or (self.protocol.life_loss_terminal and life_lost)
        self._guard.finish(is_last)
        return wrappers.step_obs(
            self._image(frame), reward, is_first=False, is_last=is_last, is_terminal=is_terminal
        )

    def _image(self, frame: np.ndarray) -> dict:
        if self.protocol.grayscale:
            frame = wrappers.to_grayscale(frame)
        return {"image": wrappers.resize_image(frame, self.protocol.image_size, self.protocol.resize)}

    @property
    def frames(self) -> int:
        """Emulator frames of the current episode, no-ops included."""
        return self._frames

    def render(self):
        return np.array(self._frame)

    def close(self):
        self._ale = None


def make_env(task: str, protocol: AtariProtocol, worker_index: int = 0) -> AtariEnv:
    del worker_index  # every episode is seeded by reset(seed=...)
    return AtariEnv(task, protocol)


SUITE = SuiteSpec(
    name="atari100k",
    tasks=tuple(GAMES),
    protocol_cls=AtariProtocol,
    make_env=make_env,
    budget=100_000,
    eval_protocol="final_eval",
    eval_episodes=100,
    eval_window=2_500,
    normaliser="human",
    description="Atari 100k: 26 games, 100k agent steps (400k frames), 64x64 RGB, no sticky actions.",
    # Published score files name games in CamelCase (Pong, MsPacman); accept those names too.
    task_aliases={published: task for task, published in GAMES.items()},
)
