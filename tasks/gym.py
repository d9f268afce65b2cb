"""Any Gymnasium environment as a task: `bench run --agent dreamerv3 --suite gym --task CartPole-v1`.

Task names are Gymnasium ids (`CartPole-v1`, `ALE/Pong-v5`), optionally `module:Id` to import a module that
registers the id first (Gymnasium's own `make` syntax). Run folders cannot contain "/", so the canonical
task name writes a namespace separator as "+" (`ALE+Pong-v5`); both spellings are accepted.

Observations become our sensors:

* a uint8 Box of shape (H, W, 3) or (H, W, 1) or (H, W) is an image, under "image";
* any other Box is flattened to float32; Discrete and MultiDiscrete become one-hot float32;
  all of them are concatenated (in the space's key order) under "vector";
* a Dict is flattened by key (nested Dicts too): one image goes under "image", several under their keys
  ("/" joins nested keys); the non-image parts are concatenated under "vector";
* `env.pixels="only"` observes `env.render()` (render_mode rgb_array) as the image instead of the
  observation, `"add"` next to it.

Actions: Discrete(n, start) is our discrete(n) (start added back); a Box with finite bounds is exposed as
[-1, 1] per dimension and rescaled to its bounds (DreamerV3's NormalizeAction, as the DMC suite does).
Other spaces (MultiBinary, Text, Tuple, Graph, ...) are refused with a one-line error.

`terminated` is `is_terminal` (and `is_last`), `truncated` is `is_last` alone. Every episode starts with
`reset(seed=episode_seed)`, so an episode is determined by its seed and its actions as long as the
environment honours Gymnasium's seeding contract. The score is the undiscounted return.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import importlib
import json

import numpy as np

from bench import spaces
from bench.api import Env, SuiteSpec, check_action
from bench.registry import RegistryError  # a KeyError that prints plainly
from tasks import wrappers

# Namespaces whose ids appear only once a module is imported (Gymnasium 1.x has no plugin entry points).
NAMESPACE_MODULES = {"ALE": "ale_py", "mbrl_bench": "bench.gym_envs"}
PIXEL_MODES = ("off", "only", "add")


@dataclasses.dataclass(frozen=True)
class GymProtocol:
    action_repeat: int = 1  # env steps per agent step (rewards summed; stops at the episode's end)
    frame_stack: int = 1  # last k observations concatenated on the channel (image) / feature (vector) axis
    image_size: int = 0  # resize images to image_size x image_size; 0 keeps the environment's size
    resize: str = "bilinear"  # resize filter (see tasks/wrappers.py)
    time_limit: int = 0  # truncation in env steps (gymnasium.make max_episode_steps); 0 = the id's own
    pixels: str = "off"  # "only": observe env.render() as the image; "add": render next to the observation
    kwargs: str = ""  # JSON object of extra gymnasium.make keyword arguments, e.g. '{"is_slippery": false}'

    def __post_init__(self):
        wrappers.require_positive(self, "action_repeat", "frame_stack")
        wrappers.require(self.image_size >= 0, self, "image_size", "must be >= 0 (0 keeps the size)")
        wrappers.require(self.time_limit >= 0, self, "time_limit", "must be >= 0 (0 = the id's own)")
        wrappers.require_choice(self, "resize", wrappers.RESIZE_METHODS)
        wrappers.require_choice(self, "pixels", PIXEL_MODES)
        make_kwargs(self)  # a malformed JSON fails at config time


def make_kwargs(protocol: GymProtocol) -> dict:
    if not protocol.kwargs:
        return {}
    try:
        value = json.loads(protocol.kwargs)
    except json.JSONDecodeError as error:
        raise ValueError(f"env.kwargs={protocol.kwargs!r}: not JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"env.kwargs={protocol.kwargs!r}: must be a JSON object of keyword arguments")
    return value


# ------------------------------------------------------------------------------------------ task ids


def split_task(task: str) -> tuple[str | None, str]:
    """'mod:ALE+Pong-v5' -> ('mod', 'ALE/Pong-v5'); Gymnasium's `module:id` split."""
    name = task.replace("+", "/")
    module, sep, env_id = name.partition(":")
    return (module, env_id) if sep else (None, name)


def resolve_id(task: str) -> tuple[str, str]:
    """(canonical task name, Gymnasium id) of a task; an unknown id names close registered ids."""
    import gymnasium

    module, env_id = split_task(task)
    if module:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise RegistryError(f"gym task {task!r}: cannot import module {module!r} ({error})") from None
    if env_id not in gymnasium.registry:
        namespace = env_id.split("/", 1)[0] if "/" in env_id else None
        if namespace in NAMESPACE_MODULES:
            try:
                importlib.import_module(NAMESPACE_MODULES[namespace])
            except ImportError:
                pass  # reported below as an unknown id
    if env_id not in gymnasium.registry:
        ids = list(gymnasium.registry)
        close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
        lowered = [i for i in ids if i.lower() == env_id.lower()]
        suggestions = ", ".join(repr(c) for c in dict.fromkeys(lowered + close))
        hint = f" Did you mean {suggestions}?" if suggestions else ""
        raise RegistryError(
            f"unknown Gymnasium id {env_id!r} for suite 'gym'.{hint} Any id registered in gymnasium works "
            "(`python -c \"import gymnasium; gymnasium.pprint_registry()\"`); use 'module:Id' for ids a "
            "module registers on import"
        )
    canonical = (f"{module}:{env_id}" if module else env_id).replace("/", "+")
    return canonical, env_id


@dataclasses.dataclass(frozen=True)
class GymSuiteSpec(SuiteSpec):
    """The gym suite accepts every registered Gymnasium id, not only its listed tasks (the leaderboard then
    ranks the tasks that runs used: `open_tasks`)."""

    open_tasks = True  # a class attribute, not a field: it is a fact of the class, not of a suite instance

    def resolve_task(self, task: str) -> str:
        return resolve_id(task)[0]


# ------------------------------------------------------------------------------- observation mapping


def _is_image(space) -> bool:
    from gymnasium import spaces as gs

    if not isinstance(space, gs.Box) or space.dtype != np.uint8:
        return False
    return len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3))


def _leaves(space, prefix: str = "") -> list[tuple[str, object]]:
    """(key path, leaf space) of an observation space; Dicts are flattened, unsupported spaces refused."""
    from gymnasium import spaces as gs

    if isinstance(space, gs.Dict):
        return [leaf for key, sub in space.spaces.items() for leaf in _leaves(sub, f"{prefix}{key}/")]
    if isinstance(space, (gs.Box, gs.Discrete, gs.MultiDiscrete)):
        return [(prefix.rstrip("/"), space)]
    where = f" at key {prefix.rstrip('/')!r}" if prefix else ""
    raise ValueError(
        f"suite gym cannot observe a {type(space).__name__} space{where}; supported: Box, Discrete, "
        "MultiDiscrete and Dicts of them"
    )


def _vector_part(space, value) -> np.ndarray:
    from gymnasium import spaces as gs

    if isinstance(space, gs.Discrete):
        out = np.zeros(space.n, np.float32)
        out[int(value) - int(space.start)] = 1.0
        return out
    if isinstance(space, gs.MultiDiscrete):
        parts = []
        for v, n, start in zip(np.ravel(value), np.ravel(space.nvec), np.ravel(space.start)):
            part = np.zeros(int(n), np.float32)
            part[int(v) - int(start)] = 1.0
            parts.append(part)
        return np.concatenate(parts)
    return np.asarray(value, np.float32).reshape(-1)


def _vector_size(space) -> int:
    from gymnasium import spaces as gs

    if isinstance(space, gs.Discrete):
        return int(space.n)
    if isinstance(space, gs.MultiDiscrete):
        return int(np.sum(space.nvec))
    return int(np.prod(space.shape))


def _get(obs, path: str):
    if not path:
        return obs
    for key in path.split("/"):
        obs = obs[key]
    return obs


# ------------------------------------------------------------------------------------- environment


class GymEnv(Env):
    """One Gymnasium environment behind our Env contract."""

    def __init__(self, task: str, protocol: GymProtocol):
        import gymnasium
        from gymnasium import spaces as gs

        self.task, env_id = resolve_id(task)
        self.protocol = protocol
        kwargs = make_kwargs(protocol)
        if protocol.pixels != "off":
            kwargs["render_mode"] = "rgb_array"
        if protocol.time_limit:
            kwargs["max_episode_steps"] = protocol.time_limit
        try:
            self._env = gymnasium.make(env_id, **kwargs)
        except TypeError as error:  # an unknown keyword argument of the environment's constructor
            raise ValueError(f"gym task {self.task}: gymnasium.make rejected env.kwargs ({error})") from None
        self._guard = wrappers.EpisodeGuard(f"gym/{self.task}")

        # actions
        action_space = self._env.action_space
        self._discrete = isinstance(action_space, gs.Discrete)
        if self._discrete:
            self._act_space = {"action": spaces.discrete(int(action_space.n))}
            self._action_start = int(action_space.start)
        elif isinstance(action_space, gs.Box):
            low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise ValueError(f"gym task {self.task}: Box actions need finite bounds, got {action_space}")
            self._action_low, self._action_high = low, high
            self._act_space = {"action": spaces.box(action_space.shape, -1.0, 1.0)}
        else:
            raise ValueError(
                f"gym task {self.task}: suite gym cannot act in a {type(action_space).__name__} space; "
                "supported: Discrete and Box"
            )
        self._action_space = action_space

        # observations: image leaves and vector leaves of the observation space
        try:
            leaves = [] if protocol.pixels == "only" else _leaves(self._env.observation_space)
        except ValueError as error:
            raise ValueError(f"gym task {self.task}: {error}") from None
        self._image_leaves = [(path, space) for path, space in leaves if _is_image(space)]
        self._vector_leaves = [(path, space) for path, space in leaves if not _is_image(space)]
        image_shapes = {}
        for path, space in self._image_leaves:
            image_shapes[path] = space.shape if len(space.shape) == 3 else (*space.shape, 1)
        if protocol.pixels != "off":
            self._env.reset(seed=0)  # render() needs a running episode to report the frame's size
            frame = self._env.render()
            if not isinstance(frame, np.ndarray) or frame.ndim != 3:
                raise ValueError(f"gym task {self.task}: env.pixels needs render() to return an RGB array")
            image_shapes["render"] = frame.shape
        named = len(image_shapes) > 1
        self._image_keys = {path: (path or "image") if named else "image" for path in image_shapes}
        sensors: dict[str, spaces.Space] = {}
        k = protocol.frame_stack
        for path, (height, width, channels) in image_shapes.items():
            if protocol.image_size:
                height = width = protocol.image_size
            sensors[self._image_keys[path]] = spaces.image(height, width, channels * k)
        if self._vector_leaves:
            size = sum(_vector_size(space) for _, space in self._vector_leaves)
            sensors["vector"] = spaces.Space("float32", (size * k,))
        if not sensors:
            raise ValueError(f"gym task {self.task}: the observation space has no observable part")
        self._obs_space = {**sensors, **spaces.step_spaces()}
        self._frames: collections.deque = collections.deque(maxlen=k)

    @property
    def obs_space(self):
        return self._obs_space

    @property
    def act_space(self):
        return self._act_space

    def _sensors(self, obs) -> dict:
        sensors = {}
        images = {path: _get(obs, path) for path, _ in self._image_leaves}
        if self.protocol.pixels != "off":
            images["render"] = self._env.render()
        for path, value in images.items():
            value = np.asarray(value, np.uint8)
            if value.ndim == 2:
                value = value[..., None]
            if self.protocol.image_size:
                value = wrappers.resize_image(value, self.protocol.image_size, self.protocol.resize)
            sensors[self._image_keys[path]] = value
        if self._vector_leaves:
            parts = [_vector_part(space, _get(obs, path)) for path, space in self._vector_leaves]
            sensors["vector"] = np.concatenate(parts).astype(np.float32)
        return sensors

    def _stacked(self) -> dict:
        if self.protocol.frame_stack == 1:
            return dict(self._frames[-1])
        return {key: np.concatenate([f[key] for f in self._frames], axis=-1) for key in self._frames[-1]}

    def reset(self, *, seed: int):
        seed = wrappers.check_seed(seed)
        obs, _ = self._env.reset(seed=seed)
        sensors = self._sensors(obs)
        for _ in range(self.protocol.frame_stack):  # the first observation fills the stack
            self._frames.append(sensors)
        self._guard.start()
        return wrappers.step_obs(self._stacked(), 0.0, is_first=True, is_last=False, is_terminal=False)

    def step(self, action):
        self._guard.check_step()
        value = check_action(self._act_space, action)["action"]
        if self._discrete:
            env_action = int(value) + self._action_start
        else:
            unit = np.clip(value.astype(np.float64), -1.0, 1.0)
            scaled = self._action_low + (unit + 1.0) / 2.0 * (self._action_high - self._action_low)
            env_action = scaled.astype(self._action_space.dtype)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.protocol.action_repeat):
            obs, r, terminated, truncated, _ = self._env.step(env_action)
            reward += float(r)
            if terminated or truncated:
                break
        self._frames.append(self._sensors(obs))
        is_last = bool(terminated or truncated)
        self._guard.finish(is_last)
        return wrappers.step_obs(self._stacked(), reward, is_first=False, is_last=is_last,
                                 is_terminal=bool(terminated))  # fmt: skip

    def render(self):
        if self.protocol.pixels == "off":
            return None
        return self._env.render()

    def close(self):
        self._env.close()


def make_env(task: str, protocol: GymProtocol, worker_index: int = 0) -> GymEnv:
    del worker_index
    return GymEnv(task, protocol)


SUITE = GymSuiteSpec(
    name="gym",
    # Listed for `bench list` and for `bench run --suite gym` without --task; any registered id resolves.
    tasks=("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "MountainCarContinuous-v0"),
    protocol_cls=GymProtocol,
    make_env=make_env,
    budget=100_000,
    eval_protocol="final_eval",
    eval_episodes=10,
    normaliser="identity",
    description="Any Gymnasium environment by id (--task CartPole-v1): Box/Discrete actions, image/vector observations.",
)
