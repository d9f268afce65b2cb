"""How each suite scores an episode, reduces a run to one number, and normalises that number per task.

Three levels, kept apart because the published data enters at different levels:

* episode value: what one episode contributes (the return; the `success` indicator on MiniHack; the
  fraction of objects returned on BringBackShapes);
* raw final score of a run: the episode values reduced under an evaluation protocol (see `leaderboard.load`),
  in the suite's score unit: game score (Atari), return (DMC), Crafter score in % (Crafter), success rate
  (MiniHack), objects returned / objects (BBS), return (Pinpad, toy);
* normalised score: the raw score mapped per task onto the scale the aggregate metrics use (human-normalised
  on Atari, return / 1000 on DMC, random-to-optimal on the toy tasks, unchanged elsewhere).

This table is the leaderboard's own: it does not import the suites (they may not be importable, and the
leaderboard must still rebuild published tables). `leaderboard.load.suite_info` combines it with the
registered `SuiteSpec` when there is one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from importlib import resources

from leaderboard.errors import UnknownNameError

PROTOCOLS = ("final_eval", "train_window", "crafter_score", "success_rate")

# The 22 Crafter achievements (crafter/data.yaml). Crafter score = exp(mean_i ln(1 + s_i)) - 1 with s_i the
# success rate in percent of achievement i over all training episodes (Hafner, 2021).
CRAFTER_ACHIEVEMENTS = (
    "collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling", "collect_stone",
    "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow", "eat_plant", "make_iron_pickaxe",
    "make_iron_sword", "make_stone_pickaxe", "make_stone_sword", "make_wood_pickaxe", "make_wood_sword",
    "place_furnace", "place_plant", "place_stone", "place_table", "wake_up",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SuiteScoring:
    """The leaderboard's facts about one suite.

    `episode_value`: "return", "success" (the record's `success` field, else return >= 1, THICK's
    definition), "objects" (the record's `score` = objects returned / objects), or "crafter" (the run is
    scored as a whole by the Crafter score). `normaliser`: "human", "div1000", "toy" or "identity".
    `gap_target`: the optimality gap's gamma (None on raw-return suites, where it has no meaning).
    `protocols`: the evaluation protocols a run of this suite can be scored under, the default first
    (used when the suite's spec cannot be loaded). `window`: agent steps of the `train_window` protocol
    when the suite's spec gives none. `frames_per_step`: env frames per agent step of the published
    protocol, used for the sample-efficiency axis when the spec cannot be loaded. `profile_max`: the upper
    end of the performance-profile thresholds (None = the largest score).
    """

    name: str
    episode_value: str
    normaliser: str
    score_unit: str
    normalised_unit: str
    protocols: tuple[str, ...]
    window: int = 0
    budget: int = 0
    frames_per_step: int = 1
    profile_max: float | None = None
    tasks: tuple[str, ...] = ()  # used when the suite's spec cannot be loaded
    gap_target: float | None = 1.0  # optimality gap threshold gamma; None where raw scores have no target
    aliases: tuple[tuple[str, str], ...] = ()  # other task names -> ours, when the spec cannot be loaded


DMC_PROPRIO_TASKS = (
    "acrobot_swingup", "ball_in_cup_catch", "cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup",
    "cartpole_swingup_sparse", "cheetah_run", "finger_spin", "finger_turn_easy", "finger_turn_hard",
    "hopper_hop", "hopper_stand", "pendulum_swingup", "reacher_easy", "reacher_hard", "walker_run",
    "walker_stand", "walker_walk",
)  # fmt: skip
# DreamerV3's 20-task vision list adds the two quadruped tasks.
DMC_VISION_TASKS = tuple(sorted(DMC_PROPRIO_TASKS + ("quadruped_run", "quadruped_walk")))
BBS_TASKS = tuple(f"distract{d}_size{s}" for d in (0, 1, 2, 4) for s in ("1.0", "1.2", "1.4", "1.6"))


def _atari_tasks() -> tuple[str, ...]:
    from tasks.atari_games import GAMES

    return tuple(GAMES)


SUITES: dict[str, SuiteScoring] = {
    "atari100k": SuiteScoring(
        "atari100k",
        "return",
        "human",
        "game score",
        "human-normalised score",
        protocols=("final_eval", "train_window"),
        # DreamerV3 scores the training episodes ending between 390k and 400k frames: 2,500 agent steps.
        window=2_500,
        budget=100_000,
        frames_per_step=4,
        profile_max=8.0,
        tasks=_atari_tasks(),
    ),
    "crafter": SuiteScoring(
        "crafter",
        "crafter",
        "identity",
        "Crafter score (%)",
        "Crafter score (%)",
        protocols=("crafter_score",),
        budget=1_000_000,
        frames_per_step=1,
        tasks=("crafter",),
        gap_target=None,
        aliases=(("reward", "crafter"),),
    ),
    "dmc_vision": SuiteScoring(
        "dmc_vision",
        "return",
        "div1000",
        "return",
        "return / 1000",
        protocols=("final_eval", "train_window"),
        window=25_000,
        budget=500_000,
        frames_per_step=2,
        profile_max=1.0,
        tasks=DMC_VISION_TASKS,
    ),
    "dmc_proprio": SuiteScoring(
        "dmc_proprio",
        "return",
        "div1000",
        "return",
        "return / 1000",
        protocols=("final_eval", "train_window"),
        window=12_500,
        budget=250_000,
        frames_per_step=2,
        profile_max=1.0,
        tasks=DMC_PROPRIO_TASKS,
    ),
    "minihack": SuiteScoring(
        "minihack",
        "success",
        "identity",
        "success rate",
        "success rate",
        protocols=("final_eval", "success_rate", "train_window"),
        profile_max=1.0,
    ),
    "pinpad": SuiteScoring(
        # Raw return: the best achievable return per layout is not published, so no normaliser.
        "pinpad",
        "return",
        "identity",
        "return",
        "return",
        protocols=("final_eval", "train_window"),
        gap_target=None,
    ),
    "bbs": SuiteScoring(
        "bbs",
        "objects",
        "identity",
        "objects returned / objects",
        "objects returned / objects",
        protocols=("final_eval", "train_window"),
        budget=625_000,
        frames_per_step=4,
        profile_max=1.0,
        tasks=BBS_TASKS,
    ),
    "gym": SuiteScoring(
        # Any Gymnasium id (tasks/gym.py): raw undiscounted return, no normaliser.
        "gym",
        "return",
        "identity",
        "return",
        "return",
        protocols=("final_eval", "train_window"),
        gap_target=None,
    ),
    "metaworld": SuiteScoring(
        "metaworld",
        "success",
        "identity",
        "success rate",
        "success rate",
        protocols=("final_eval", "train_window"),
        window=25_000,
        budget=250_000,
        frames_per_step=2,
        profile_max=1.0,
    ),
    "toy": SuiteScoring(
        "toy",
        "return",
        "toy",
        "return",
        "0 = random policy, 1 = optimal",
        protocols=("final_eval", "train_window"),
        profile_max=1.0,
        tasks=("reach", "keydoor", "point", "reach_progress"),
    ),
}


def scoring(suite: str) -> SuiteScoring:
    if suite not in SUITES:
        raise UnknownNameError(
            f"unknown suite {suite!r} for leaderboards; known: {', '.join(sorted(SUITES))}"
        )
    return SUITES[suite]


# ------------------------------------------------------------------------------------- episode values


def episode_value(suite: SuiteScoring, record: Mapping, where: str) -> float:
    """The value one (validated) score record contributes; `where` names the record in errors."""
    if suite.episode_value == "return":
        return float(record["return"])
    if suite.episode_value == "success":
        if "success" in record:
            success = record["success"]
            if isinstance(success, bool) or (isinstance(success, (int, float)) and success in (0, 1)):
                return float(success)
            raise ValueError(f"{where}: field 'success' must be a bool or 0/1, got {success!r}")
        return float(float(record["return"]) >= 1.0)
    if suite.episode_value == "objects":
        value = record.get("score")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{where}: field 'score' (objects returned / objects) must be a number in [0, 1], got {value!r}"
            )
        return float(value)
    raise ValueError(f"suite {suite.name!r} scores whole runs ({suite.episode_value}), not single episodes")


def crafter_score(records, where: str) -> float:
    """Crafter score in percent over the given episodes (each needs every `achievement_<name>` count)."""
    if not records:
        raise ValueError(f"{where}: no episodes to compute the Crafter score from")
    rates = []
    for name in CRAFTER_ACHIEVEMENTS:
        key = f"achievement_{name}"
        unlocked = 0
        for record in records:
            count = record.get(key)
            if isinstance(count, bool) or not isinstance(count, (int, float)) or count < 0:
                raise ValueError(f"{where}: episode at step {record.get('step')} lacks a count {key!r}")
            unlocked += count > 0
        rates.append(100.0 * unlocked / len(records))
    return math.exp(sum(math.log1p(rate) for rate in rates) / len(rates)) - 1.0


def reduce_episodes(suite: SuiteScoring, records, where: str) -> float:
    """Raw score of a set of episodes: their mean episode value, or the Crafter score."""
    if suite.episode_value == "crafter":
        return crafter_score(records, where)
    values = [episode_value(suite, record, where) for record in records]
    return sum(values) / len(values)


# -------------------------------------------------------------------------------------- normalisers


@dataclasses.dataclass(frozen=True)
class AtariBaselines:
    """Random and human scores per game (our task names), the standard table shared by rliable and IRIS."""

    random: Mapping[str, float]
    human: Mapping[str, float]


def atari_baselines() -> AtariBaselines:
    from tasks.atari_games import PUBLISHED_TO_TASK

    data = resources.files("leaderboard.reference")
    tables = {}
    for name in ("RANDOM", "HUMAN"):
        raw = json.loads(data.joinpath(f"atari100k_{name}.json").read_text())
        tables[name] = {PUBLISHED_TO_TASK[game]: float(values[0]) for game, values in raw.items()}
    return AtariBaselines(random=tables["RANDOM"], human=tables["HUMAN"])


# Expected return of the uniform random policy and of an optimal policy on each toy task under the default
# protocol (tasks/toy_reference.py derives them from the task rules; tests/test_toy_reference.py checks them
# against it and against episodes of the environments). Exact for reach and keydoor; point is a Monte Carlo
# mean over 10^6 episodes (standard error ~0.003).
TOY_BASELINES = {
    "reach": (11.885257119858833, 19.354166666666668),
    "keydoor": (0.11442861048783878, 1.0),
    "point": (18.728798815243998, 29.16933353019816),
    "reach_progress": (0.11548873346104993, 3.3333333333333335),
}


class Normaliser:
    """Maps a raw task score to the normalised scale of its suite."""

    def __init__(self, suite: SuiteScoring):
        self.suite = suite
        self._baselines = atari_baselines() if suite.normaliser == "human" else None

    def __call__(self, task: str, raw: float) -> float:
        kind = self.suite.normaliser
        if kind == "identity":
            return raw
        if kind == "div1000":
            return raw / 1000.0
        if kind == "human":
            baselines = self._baselines
            if task not in baselines.human:
                raise UnknownNameError(f"no human/random baseline for Atari task {task!r}")
            random, human = baselines.random[task], baselines.human[task]
            return (raw - random) / (human - random)
        if kind == "toy":
            if task not in TOY_BASELINES:
                raise UnknownNameError(f"no random/optimal baseline for toy task {task!r}")
            random, optimal = TOY_BASELINES[task]
            return (raw - random) / (optimal - random)
        raise ValueError(f"unknown normaliser {kind!r} for suite {self.suite.name!r}")

    def describe(self) -> str:
        return {
            "identity": "none (raw score)",
            "div1000": "return / 1000",
            "human": "(score - random) / (human - random), the standard Atari random/human table",
            "toy": "(return - random) / (optimal - random), the expected returns of the uniform random and an "
            "optimal policy (tasks/toy_reference.py)",
        }[self.suite.normaliser]
