"""Benchmark plans: one YAML file naming the agents (with presets), the suite, tasks, seeds and budget of a
comparison, so that running it and building its board are each one command.

    bench run --plan plans/cpu.yaml [--parallel 2] [--logdir DIR]
    bench leaderboard --plan plans/cpu.yaml [--runs DIR ...]

A plan file:

    name: cpu                          # names the board
    about: one line saying what the plan compares
    suite: toy
    tasks: [reach, keydoor, point]     # or "all"
    seeds: "0:5"                       # as --seeds: A:B (B excluded) or a comma list
    steps: 20000                       # agent steps of every run (default: the suite's budget)
    settings: {run.eval_episodes: 10}  # dotted overrides for every run (optional)
    agents:
      - agent: dreamerv3
        configs: [debug, quick]        # presets, in order (optional)
        settings: {...}                # this agent's extra overrides (optional)
      - agent: random

Every (agent, task, seed) is one run in the usual folder, so a plan resumes and skips exactly like a sweep,
and runs made by hand with the same settings count. An agent that cannot act in a task's action space (IRIS on
continuous control) is listed as such and left out, not failed. The plan's hash (sha256 of its bytes) goes
into the board, whose rows are the plan's agent entries (`Plan.label`), not config hashes: a task preset
that changes an agent's hash on one task does not split its row.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

from bench import config as config_lib

TOP_KEYS = {"name", "about", "suite", "tasks", "seeds", "steps", "settings", "agents"}
REQUIRED_KEYS = {"name", "suite", "agents"}
AGENT_KEYS = {"agent", "configs", "settings"}


class PlanError(ValueError):
    """A malformed plan file; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class PlanAgent:
    agent: str
    configs: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    agent: PlanAgent
    task: str
    seed: int
    overrides: tuple[tuple[str, str], ...]  # the plan's settings, then the agent's, then steps


@dataclasses.dataclass(frozen=True)
class Plan:
    path: Path
    name: str
    about: str
    suite: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int | None
    settings: tuple[tuple[str, str], ...]
    agents: tuple[PlanAgent, ...]
    sha256: str

    def runs(self) -> tuple[list[PlannedRun], list[str]]:
        """The plan's runs, and a line per (agent, task) left out because the agent cannot act there."""
        planned, left_out = [], []
        for agent in self.agents:
            for task in self.tasks:
                problem = _action_problem(agent.agent, self.suite, task)
                if problem:
                    left_out.append(f"{agent.agent} on {task}: {problem}")
                    continue
                overrides = (*self.settings, *agent.settings)
                if self.steps is not None:
                    overrides += (("run.steps", str(self.steps)),)
                planned += [PlannedRun(agent, task, seed, overrides) for seed in self.seeds]
        return planned, left_out

    def describe(self) -> str:
        return f"plan {self.name!r} ({self.path.name}, sha256 {self.sha256[:12]})"

    def label(self, entry: PlanAgent) -> str:
        """The board row of an agent entry: the agent's name; for an agent the plan lists more than once, the
        name with the entry's presets and settings (`dreamerv3[size1m]`, `thick[debug; thick.beta=30]`). One
        row per entry, whatever config hashes its runs have (a task preset changes the hash on one task)."""
        if sum(other.agent == entry.agent for other in self.agents) == 1:
            return entry.agent
        parts = ["+".join(entry.configs)] if entry.configs else []
        parts += [f"{key}={value}" for key, value in entry.settings]
        return f"{entry.agent}[{'; '.join(parts) or 'defaults'}]"


def _strings(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError(f"{where}: expected a name or a list of names, got {value!r}")
    return tuple(value)


def _settings(value, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise PlanError(f"{where}: expected a mapping of dotted keys to values, got {value!r}")
    return tuple((str(key), str(item)) for key, item in value.items())


def _check_keys(data: dict, allowed: set[str], where: str) -> None:
    import difflib

    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PlanError(f"{where}: unknown key {key!r}.{hint} Keys: {', '.join(sorted(allowed))}")


def load(path) -> Plan:
    """Read and check a plan file (names are checked against the registry; configs are resolved later)."""
    from bench import registry
    from bench.sweep import parse_seeds

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PlanError(f"plan {path}: {error.strerror or error}") from None
    try:
        data = config_lib.load_yaml(path)
    except Exception as error:  # noqa: BLE001 - a YAML syntax error is the user's to fix: one line
        raise PlanError(f"plan {path}: not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise PlanError(f"plan {path}: expected a mapping at the top level")
    _check_keys(data, TOP_KEYS, f"plan {path}")
    missing = sorted(REQUIRED_KEYS - set(data))
    if missing:
        raise PlanError(f"plan {path}: missing {', '.join(map(repr, missing))}")
    suite = registry.get_suite(str(data["suite"]))
    tasks_value = data.get("tasks", "all")
    tasks = suite.tasks if tasks_value == "all" else tuple(
        suite.resolve_task(t) for t in _strings(tasks_value, f"plan {path}: tasks")
    )  # fmt: skip
    try:
        seeds = tuple(parse_seeds(str(data.get("seeds", "0"))))
    except ValueError as error:
        raise PlanError(f"plan {path}: seeds: {error}") from None
    steps = data.get("steps")
    if steps is not None and (not isinstance(steps, (int, float)) or steps <= 0 or not float(steps).is_integer()):
        raise PlanError(f"plan {path}: steps: expected a positive whole number, got {steps!r}")
    entries = data["agents"]
    if not isinstance(entries, list) or not entries:
        raise PlanError(f"plan {path}: agents: expected a non-empty list of {{agent: NAME, configs: [...]}}")
    agents = []
    for index, entry in enumerate(entries):
        where = f"plan {path}: agents[{index}]"
        if isinstance(entry, str):
            entry = {"agent": entry}
        if not isinstance(entry, dict) or "agent" not in entry:
            raise PlanError(f"{where}: expected {{agent: NAME, configs: [...], settings: {{...}}}}")
        _check_keys(entry, AGENT_KEYS, where)
        registry.get_agent(str(entry["agent"]))  # an unknown name fails here, with a suggestion
        agents.append(PlanAgent(str(entry["agent"]), _strings(entry.get("configs", []), f"{where}.configs"),
                                _settings(entry.get("settings"), f"{where}.settings")))  # fmt: skip
    keys = [(a.agent, a.configs, a.settings) for a in agents]
    if len(set(keys)) != len(keys):
        raise PlanError(f"plan {path}: an agent entry is listed twice (same agent, configs and settings)")
    return Plan(
        path=path, name=str(data["name"]), about=str(data.get("about", "")), suite=str(data["suite"]),
        tasks=tuple(tasks), seeds=seeds, steps=None if steps is None else int(steps),
        settings=_settings(data.get("settings"), f"plan {path}: settings"), agents=tuple(agents),
        sha256=hashlib.sha256(raw).hexdigest(),
    )  # fmt: skip


@functools.cache
def _action_kind(suite: str, task: str) -> str:
    """'discrete' or 'continuous': the task's action space, read from one env (made once per task)."""
    from bench import registry, spaces

    spec = registry.get_suite(suite)
    env = spec.make_env(task, spec.protocol_cls(), 0)
    try:
        return spaces.action_kind(env.act_space)
    finally:
        env.close()


def _action_problem(agent: str, suite: str, task: str) -> str | None:
    from bench import registry

    kinds = registry.get_agent(agent).action_kinds
    kind = _action_kind(suite, task)
    if kind in kinds:
        return None
    return f"acts in {' and '.join(kinds)} action spaces only; this task's actions are {kind}"


@dataclasses.dataclass(frozen=True)
class ResolvedRun:
    run: PlannedRun
    agent: str  # the registered agent name, as run folders and result files spell it
    config_hash: str
    label: str  # the board row of the run's plan entry (`Plan.label`)

    @property
    def key(self) -> tuple[str, str, str, int]:
        """(task, agent, config hash, seed): how the leaderboard identifies a run."""
        return (self.run.task, self.agent, self.config_hash, self.run.seed)

    def folder(self, suite: str, root) -> Path:
        from bench import results

        return results.run_dir(root, suite, self.run.task, self.agent, self.config_hash, self.run.seed)

    @property
    def name(self) -> str:
        return f"{self.run.task}/{self.agent}/{self.config_hash}/seed{self.run.seed}"


def resolve_runs(plan: Plan) -> list[ResolvedRun]:
    """Each planned run with its agent name and config hash (configs resolved: a typo in the plan fails here,
    before any run starts). Resolution is per (agent entry, task): seeds share it."""
    from bench import runner

    cache: dict[tuple, tuple[str, str]] = {}
    found = []
    for run in plan.runs()[0]:
        key = (run.agent, run.task, run.overrides)
        if key not in cache:
            resolved = runner.resolve(run.agent.agent, plan.suite, run.task, run.agent.configs, dict(run.overrides))
            cache[key] = (resolved.agent_spec.name, resolved.config.hash())
        found.append(ResolvedRun(run, *cache[key], plan.label(run.agent)))
    return found
