"""The toy suite's random/optimal anchors (leaderboard.normalize.TOY_BASELINES): the table equals what
tasks/toy_reference.py derives from the task rules, and those derivations agree with episodes of the real
environments (tasks/toy.py): the random policy's mean return within 4 standard errors, and scripted optimal
policies earning exactly the optimal returns the derivation assumes."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from leaderboard.normalize import TOY_BASELINES, Normaliser, scoring
from tasks import toy, toy_reference
from tests.helpers import random_policy_episodes


def test_table_is_what_the_rules_give():
    assert TOY_BASELINES["reach"] == pytest.approx(toy_reference.reach(), abs=1e-9)
    assert TOY_BASELINES["keydoor"] == pytest.approx(toy_reference.keydoor(), abs=1e-9)
    assert TOY_BASELINES["reach_progress"] == pytest.approx(toy_reference.reach_progress(), abs=1e-9)
    # point is Monte Carlo: another seed and fewer episodes agree within 5 standard errors (~0.003 * sqrt(10))
    random, optimal = toy_reference.point(episodes=100_000, seed=1)
    assert random == pytest.approx(TOY_BASELINES["point"][0], abs=0.05)
    assert optimal == pytest.approx(TOY_BASELINES["point"][1], abs=0.05)


@pytest.mark.parametrize("task", ["reach", "keydoor", "point", "reach_progress"])
def test_random_policy_on_the_real_env_matches(task):
    returns, _ = random_policy_episodes(task, 400)
    se = returns.std() / np.sqrt(returns.size)
    assert abs(returns.mean() - TOY_BASELINES[task][0]) < 4 * se + 1e-9, (returns.mean(), se)


def _shortest_first_move(env: toy.GridEnv, start, goal, blocked) -> int:
    """Breadth-first search on the real move rules: the first move of a shortest path (0 = stay at goal)."""
    if (np.asarray(start) == goal).all():
        return 0
    grid = env.protocol.grid
    seen, queue = {tuple(start)}, deque([(tuple(start), None)])
    while queue:
        cell, first = queue.popleft()
        for move in range(1, len(toy.MOVES)):
            target = tuple(np.clip(np.asarray(cell) + toy.MOVES[move], 0, grid - 1))
            if target in seen or target in blocked:
                continue
            if target == tuple(goal):
                return first or move
            seen.add(target)
            queue.append((target, first or move))
    raise AssertionError("goal unreachable")


def _walk_to_goal(task: str, seed: int) -> tuple[int, float]:
    """(initial distance, return) of a shortest-path walk to the goal on `task`'s real env."""
    env = toy.make_env(task, toy.ToyProtocol())
    env.reset(seed=seed)
    d0 = int(np.abs(env.agent - env.goal).sum())
    total, obs = 0.0, {"is_last": False}
    while not obs["is_last"]:
        obs = env.step({"action": np.int32(_shortest_first_move(env, env.agent, env.goal, set()))})
        total += float(obs["reward"])
    return d0, total


def test_optimal_grid_policies_earn_the_optimal_returns():
    scale, length = 2 * (toy.ToyProtocol().grid - 1), toy.DEFAULT_LENGTH["reach"]
    for seed in range(40):
        d0, total = _walk_to_goal("reach", seed)
        assert total == pytest.approx(sum(1 - max(d0 - t, 0) / scale for t in range(1, length + 1)))
        d0, total = _walk_to_goal("reach_progress", seed)
        assert total == d0
    env = toy.make_env("keydoor", toy.ToyProtocol())
    for seed in range(40):
        env.reset(seed=seed)
        total, obs = 0.0, {"is_last": False}
        while not obs["is_last"]:
            target, blocked = (env.door, set()) if env.has_key else (env.key, {tuple(env.door)})
            obs = env.step({"action": np.int32(_shortest_first_move(env, env.agent, target, blocked))})
            total += float(obs["reward"])
        assert total == 1.0 and env.success


def test_optimal_point_policy_on_the_real_env():
    """The greedy per-axis policy of the derivation, on the real env, over 2000 episodes."""
    env = toy.make_env("point", toy.ToyProtocol())
    returns = []
    for seed in range(2000):
        env.reset(seed=seed)
        total, obs = 0.0, {"is_last": False}
        while not obs["is_last"]:
            action = np.clip((env.goal - env.position) / env.speed, -1.0, 1.0).astype(np.float32)
            obs = env.step({"action": action})
            total += float(obs["reward"])
        returns.append(total)
    returns = np.asarray(returns)
    assert abs(returns.mean() - TOY_BASELINES["point"][1]) < 4 * returns.std() / np.sqrt(returns.size)


def test_toy_scores_are_normalised_from_random_to_optimal():
    normalise = Normaliser(scoring("toy"))
    for task, (random, optimal) in TOY_BASELINES.items():
        assert normalise(task, random) == pytest.approx(0.0)
        assert normalise(task, optimal) == pytest.approx(1.0)
    assert normalise("keydoor", 0.5) == pytest.approx((0.5 - 0.11442861048783878) / (1 - 0.11442861048783878))
