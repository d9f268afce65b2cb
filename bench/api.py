"""The two contracts of the suite: agents (Equinox, explicit state) and tasks (host environments).

Agents follow the Equinox abstract/final pattern and the "solver + explicit state" split:

* The agent object holds only hashable configuration and its observation/action spaces; it is static
  under `jax.jit` (pass it through `eqx.filter_jit` or close over it).
* Every array lives in an explicit state pytree returned by `init` and threaded through `update`.
* The recurrent policy state (`carry`) is a separate pytree threaded through `act`.

An agent trains on one or more named *streams* (`StreamSpec`): each has its own batch shape, ratio of
replayed to policy steps, sampler, start step and replay table, and the runner keeps one update credit per
stream. Batches handed to `update` and `report` are dicts of arrays shaped (B, T, ...): every observation key,
the action keys, and whatever `act` returned as `extras` at that step (e.g. stored latents for replay
context). `T = context + length` of the stream.

Tasks are host environments: `reset(seed=...)` and `step(action)` return an observation dict carrying
`reward`, `is_first`, `is_last`, `is_terminal` besides the sensors (`image` uint8 HxWx3, `vector` float32).
Truncation is `is_last` without `is_terminal`. An episode is fully determined by its seed and its actions,
which is what lets a killed run resume exactly (the runner replays the unfinished episode's actions).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import numpy as np

from bench.spaces import Space

Obs = dict[str, Any]
Action = dict[str, Any]
Metrics = dict[str, Any]

MODES = ("train", "eval")


# ----------------------------------------------------------------------------------------------- agents


SAMPLERS = ("uniform", "recency", "mixture")
"""Built-in replay samplers (bench/replay.py registers them; agents may register more by name):
"uniform" over all valid windows, "recency" (window age with weight exp(-replay.recency_decay * age)), and
"mixture" (recency with probability `replay.recency`, else uniform: DreamerV3's default with recency 0)."""


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """One training stream: `batch` sequences of `context + length` consecutive steps from replay table `table`.

    * `context` first steps of each sequence only initialise the carry (e.g. DreamerV3's `replay_context: 1`
      reads the latents stored at that step); losses use the last `length` steps.
    * `ratio`: replayed steps per policy step (DreamerV3's train_ratio meaning: updates per policy step =
      ratio / (batch * length)); None takes the run's `run.train_ratio`. `ratio_scale` multiplies either
      (Hieros' level i trains every 4^i updates: scale 4^-i of the run's ratio).
    * `start`: the agent step from which this stream trains (IRIS starts its actor-critic later).
    * `sampler`: a sampler name registered in `bench.replay.SAMPLERS`; None takes the run's replay config
      ("mixture" of uniform and recency by `replay.recency`).
    * `online`: whether fresh windows are trained on once first (DreamerV3's online queue; one queue per
      stream); None takes `replay.online`.
    * `table`: the replay table the windows come from. Table "main" holds every step of every env worker
      (observations, actions, `act` extras). Any other table is written from `act` extras named
      "<table>/<key>", for the env workers where the extra "<table>/write" (B,) bool is true (Hieros writes
      level i's table every 4^i steps).
    """

    batch: int
    length: int
    context: int = 0
    ratio: float | None = None
    ratio_scale: float = 1.0
    start: int = 0
    sampler: str | None = None
    online: bool | None = None
    table: str = "main"

    def __post_init__(self):
        for name in ("batch", "length"):
            if getattr(self, name) < 1:
                raise ValueError(f"StreamSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.context < 0 or self.start < 0:
            raise ValueError(f"StreamSpec context and start must be >= 0, got {self.context}, {self.start}")
        if self.ratio is not None and not self.ratio > 0:
            raise ValueError(f"StreamSpec.ratio must be > 0, got {self.ratio}")
        if not self.ratio_scale > 0:
            raise ValueError(f"StreamSpec.ratio_scale must be > 0, got {self.ratio_scale}")

    @property
    def total_length(self) -> int:
        return self.context + self.length


class AbstractAgent(eqx.Module):
    """The uniform agent API. Final classes implement every abstract method; nothing overrides concrete ones."""

    config: eqx.AbstractVar[Any]
    obs_space: eqx.AbstractVar[Mapping[str, Space]]
    act_space: eqx.AbstractVar[Mapping[str, Space]]

    @abc.abstractmethod
    def init(self, *, key) -> Any:
        """Create the full agent state pytree (networks, optimizer state, slow critics, counters)."""

    @abc.abstractmethod
    def initial_carry(self, state, batch_size: int) -> Any:
        """The policy carry for `batch_size` parallel environments at episode start (may read the state)."""

    @abc.abstractmethod
    def act(self, state, carry, obs: Obs, *, key, mode: str) -> tuple[Any, Action, dict]:
        """One policy step for a batch of environments.

        `obs` holds (B, ...) arrays; the carry is reset where `obs["is_first"]`. Returns the new carry, the
        action dict (B, ...) and `extras` (B, ...) that the runner stores in replay next to this step (keys
        "<table>/..." go to another table, see `StreamSpec`). Extras may not reuse an observation or action
        key. `mode` is "train" or "eval" (static).
        """

    @abc.abstractmethod
    def update(self, state, stream: str, batch: dict, *, key) -> tuple[Any, Metrics, dict]:
        """One gradient update on one batch of stream `stream` (a static name from `streams()`).

        The runner calls it once per due update of each stream, in the order `streams()` lists them.
        Returns (new state, scalar metrics, replay updates). Replay updates are arrays aligned with the
        batch's (B, T) axes (e.g. refreshed latents) that the runner writes back into the stream's table at
        the sampled positions; return {} for none. Metric names should say what they measure; the runner
        logs them as they are.
        """

    @abc.abstractmethod
    def report(self, state, batch: dict, *, key) -> Metrics:
        """Diagnostics on a batch of the first stream: scalars plus uint8 images (H, W, 3) / videos (T, H, W, 3)."""

    @abc.abstractmethod
    def streams(self) -> Mapping[str, StreamSpec]:
        """The training streams by name, in update order ({"train": ...}); empty for agents that do not learn."""


@dataclasses.dataclass(frozen=True)
class ImaginationCase:
    """One way of imagining that `bench perf agent` times: `fn(state, inputs, key)` is jitted and run on the
    agent's state, `inputs` (a pytree of arrays) and a PRNG key; one call imagines `steps` model steps in all
    (batch x horizon). Its outputs are only waited for.

    Optional agent method (agents that imagine with a learned model define it; `bench perf agent` looks it up
    and skips agents without it):

        def imagination_benchmark(self, batches: Mapping[str, dict]) -> dict[str, ImaginationCase]

    `batches` holds one synthetic batch per stream (as `update` gets them). The first case is the agent's own
    imagination; perf reports every case's steps/s and the first case's speed-up over each other case (e.g.
    IRIS: generation with its KV cache against recomputing the full context for every token).
    """

    fn: Callable[[Any, Any, Any], Any]
    inputs: Any
    steps: int


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """How the registry builds an agent.

    `config_cls` is a frozen dataclass with defaults. `presets` names YAML files (package resource paths
    "package:relative/path.yaml" or absolute paths) of named presets, layered in order (a preset defined again
    in a later file updates the earlier one's keys); a preset named after the suite is applied automatically
    before `--configs`. `action_kinds` says which action spaces the agent can act in ("discrete",
    "continuous"): contract tests and benchmark plans use it to leave out combinations that cannot run.
    `batch_shards` says the agent's update can run split into equal parts of its batch with its one-device
    math (`run.batch_shards`; every random draw, batch statistic and mean of the update written with
    agents/common/shards.py, and tests/test_batch_shards.py comparing the two).
    """

    name: str
    config_cls: type
    make: Callable[..., AbstractAgent]  # make(config, obs_space, act_space) -> agent
    presets: tuple[str, ...] = ()
    description: str = ""
    action_kinds: tuple[str, ...] = ("discrete", "continuous")
    batch_shards: bool = False


# ------------------------------------------------------------------------------------------------ tasks


class Env(abc.ABC):
    """A host environment. Owns its randomness; every episode is seeded explicitly by `reset(seed=...)`."""

    @property
    @abc.abstractmethod
    def obs_space(self) -> dict[str, Space]:
        """Sensors plus the step keys (see `bench.spaces.step_spaces`)."""

    @property
    @abc.abstractmethod
    def act_space(self) -> dict[str, Space]:
        """Action dict spaces, usually {"action": ...}."""

    @abc.abstractmethod
    def reset(self, *, seed: int) -> Obs:
        """Start an episode determined by `seed`; the observation has `is_first=True`."""

    @abc.abstractmethod
    def step(self, action: Action) -> Obs:
        """Advance one agent step. Must not be called after `is_last` without a reset."""

    def episode_stats(self) -> dict[str, float]:
        """Extra score fields of the episode that just ended (e.g. achievements, success)."""
        return {}

    def render(self) -> np.ndarray | None:
        """An RGB frame of the full scene for videos, or None."""
        return None

    def close(self) -> None:
        return None


def check_action(act_space: Mapping[str, Space], action: Mapping[str, Any]) -> Action:
    """Validate an (unbatched) action dict, raising a ValueError that names the key and the problem."""
    missing = set(act_space) - set(action)
    unknown = set(action) - set(act_space)
    if missing or unknown:
        raise ValueError(f"action keys {sorted(action)} do not match the action space {sorted(act_space)}")
    return {key: space.check(f"action[{key!r}]", action[key]) for key, space in act_space.items()}


@dataclasses.dataclass(frozen=True)
class SuiteSpec:
    """A benchmark suite: its tasks, budget, protocol and scoring.

    * `protocol_cls`: frozen dataclass of every protocol choice with the published defaults (action repeat,
      image size, sticky actions, ...). It is the `env` section of the run config, written to the manifest.
    * `make_env(task, protocol, worker_index) -> Env`: must be importable in a fresh subprocess, so
      give a module-level function.
    * `budget`: agent steps per run. `frames_per_step(protocol)` converts agent steps to env frames.
    * `score_fields`: extra per-episode fields from `Env.episode_stats` that the scores file records.
    * `eval_protocol`: how a run reduces to one final score: "final_eval" (mean return of the evaluation
      episodes after training), "train_window" (training episodes ending in the last `window` agent steps),
      "success_rate" / "crafter_score" (over all training episodes), see `leaderboard`.
    * `normaliser`: name of the normalisation used on leaderboards (e.g. "human", "div1000", "identity").
    """

    name: str
    tasks: tuple[str, ...]
    protocol_cls: type
    make_env: Callable[..., Env]
    budget: int
    eval_protocol: str = "final_eval"
    eval_episodes: int = 10
    eval_window: int = 0
    score_fields: tuple[str, ...] = ()
    normaliser: str = "identity"
    description: str = ""
    task_aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def frames_per_step(self, protocol) -> int:
        return int(getattr(protocol, "action_repeat", 1))

    def resolve_task(self, task: str) -> str:
        """Canonical task name; unknown names list the suite's tasks."""
        if task in self.tasks:
            return task
        lowered = {t.lower(): t for t in self.tasks}
        alias = self.task_aliases.get(task) or lowered.get(task.lower())
        if alias:
            return alias
        import difflib

        close = difflib.get_close_matches(task, self.tasks, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task {task!r} for suite {self.name!r}.{hint} Tasks: {', '.join(self.tasks)}")
