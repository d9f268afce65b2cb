"""Expected returns of the uniform random policy and of an optimal policy on the toy tasks (default protocol).

They anchor the toy suite's normalised score on leaderboards, (return - random) / (optimal - random): 0 is
the random policy, 1 the best possible. The numbers the leaderboard uses are written out in
`leaderboard.normalize.TOY_BASELINES`; this module derives them from the task rules (tasks/toy.py) and
`tests/test_toy_reference.py` checks both the table against this module and this module against episodes
of the real environments.

* reach (5 x 5 grid, 20 steps, agent and goal on two distinct uniform cells): reward 1 - d / 8 after each
  move, d the Manhattan distance. Exact: the random walk's cell distribution is propagated step by step;
  the optimal policy walks a shortest path and then stays, so d_t = max(d_0 - t, 0).
* reach_progress (reach with reward d_{t-1} - d_t): the return is d_0 - d_20. Exact: the random walk's
  expected final distance; the optimal policy ends on the goal, so E[d_0].
* keydoor (40 steps; door uniform in the top row, agent and key on two distinct uniform cells below it):
  reward 1 when the agent walks into the door holding the key. Exact: the random walk over (cell, has key)
  with success absorbing. The optimal policy always succeeds (a path is at most 7 + 8 steps long), so 1.
* point (unit square, 30 steps of at most 0.1 per axis, start and goal uniform): reward 1 - |p - g| / sqrt(2)
  after each move. Monte Carlo (seeded): uniform actions in [-1, 1]^2; optimal = each axis moves as far
  towards the goal as it may (clip((g - p) / 0.1, -1, 1)), which minimises every step's distance at once.
"""

from __future__ import annotations

import itertools

import numpy as np

from tasks.toy import DEFAULT_LENGTH, MOVES, PointEnv, ToyProtocol

GRID = ToyProtocol().grid
POINT_EPISODES = 1_000_000  # Monte Carlo episodes for `point` (standard error ~0.003)


def _step_cells(grid: int) -> np.ndarray:
    """(cells, moves) index of the cell each move leads to (moves clipped at the border)."""
    cells = list(itertools.product(range(grid), range(grid)))
    index = {cell: i for i, cell in enumerate(cells)}
    table = np.zeros((len(cells), len(MOVES)), np.int64)
    for i, (row, col) in enumerate(cells):
        for m, (dr, dc) in enumerate(MOVES):
            target = (min(max(row + dr, 0), grid - 1), min(max(col + dc, 0), grid - 1))
            table[i, m] = index[target]
    return table


def _random_walks(grid: int, length: int):
    """For every (goal, start != goal) pair: the Manhattan distance of each cell to the goal (cells,), the
    start cell, and the random walk's cell distributions after steps 1..length (length, cells)."""
    cells = np.array(list(itertools.product(range(grid), range(grid))))
    step = _step_cells(grid)
    for goal in range(len(cells)):
        distance = np.abs(cells - cells[goal]).sum(-1)
        for start in range(len(cells)):
            if start == goal:
                continue
            p, walk = np.zeros(len(cells)), []
            p[start] = 1.0
            for _ in range(length):
                moved = np.zeros_like(p)
                np.add.at(moved, step.ravel(), np.repeat(p / len(MOVES), len(MOVES)))
                p = moved
                walk.append(p)
            yield distance, start, np.array(walk)


def reach(grid: int = GRID, length: int = DEFAULT_LENGTH["reach"]) -> tuple[float, float]:
    """(random, optimal) expected return on `reach`."""
    scale = 2 * (grid - 1)
    random, optimal = [], []
    for distance, start, walk in _random_walks(grid, length):
        random.append(float((walk @ (1.0 - distance / scale)).sum()))  # reward on arriving in each cell
        d0 = int(distance[start])
        optimal.append(sum(1.0 - max(d0 - t, 0) / scale for t in range(1, length + 1)))
    return float(np.mean(random)), float(np.mean(optimal))


def reach_progress(grid: int = GRID, length: int = DEFAULT_LENGTH["reach_progress"]) -> tuple[float, float]:
    """(random, optimal) expected return on `reach_progress`: E[d_0 - d_T] of the random walk, and E[d_0]."""
    random, optimal = [], []
    for distance, start, walk in _random_walks(grid, length):
        random.append(float(distance[start] - walk[-1] @ distance))
        optimal.append(float(distance[start]))
    return float(np.mean(random)), float(np.mean(optimal))


def keydoor(grid: int = GRID, length: int = DEFAULT_LENGTH["keydoor"]) -> tuple[float, float]:
    """(random, optimal) expected return on `keydoor`: the random walk's success probability, and 1."""
    cells = list(itertools.product(range(grid), range(grid)))
    index = {cell: i for i, cell in enumerate(cells)}
    step = _step_cells(grid)
    inner = [cell for cell in cells if cell[0] > 0]
    n = len(cells)
    total, cases = 0.0, 0
    for door_col in range(grid):
        door = index[(0, door_col)]
        for key in inner:
            # transitions of state s = has_key * n + cell, and the probability of succeeding from s
            move = np.zeros((2 * n, 2 * n))
            success = np.zeros(2 * n)
            for has, cell, m in itertools.product((0, 1), range(n), range(len(MOVES))):
                target, here = step[cell, m], has * n + cell
                if target == door:
                    if has:
                        success[here] += 1.0 / len(MOVES)
                    else:
                        move[here, here] += 1.0 / len(MOVES)  # the locked door blocks the way
                else:
                    move[here, int(has or target == index[key]) * n + target] += 1.0 / len(MOVES)
            starts = [index[agent] for agent in inner if agent != key]
            p = np.zeros((len(starts), 2 * n))
            p[np.arange(len(starts)), starts] = 1.0
            won = np.zeros(len(starts))
            for _ in range(length):
                won += p @ success
                p = p @ move
            total += float(won.sum())
            cases += len(starts)
    return total / cases, 1.0


def point(episodes: int = POINT_EPISODES, length: int = DEFAULT_LENGTH["point"], seed: int = 0
          ) -> tuple[float, float]:  # fmt: skip
    """(random, optimal) expected return on `point` by Monte Carlo."""
    rng = np.random.default_rng(seed)
    speed = PointEnv.speed
    start, goal = rng.uniform(0.0, 1.0, (2, episodes, 2))
    totals = []
    for policy in ("random", "optimal"):
        position, total = start.copy(), np.zeros(episodes)
        for _ in range(length):
            if policy == "random":
                action = rng.uniform(-1.0, 1.0, (episodes, 2))
            else:
                action = np.clip((goal - position) / speed, -1.0, 1.0)
            position = np.clip(position + speed * action, 0.0, 1.0)
            total += 1.0 - np.linalg.norm(position - goal, axis=-1) / np.sqrt(2.0)
        totals.append(float(total.mean()))
    return totals[0], totals[1]


def baselines() -> dict[str, tuple[float, float]]:
    """{task: (random, optimal)} for the default protocol (a few seconds; `point` dominates)."""
    return {"reach": reach(), "keydoor": keydoor(), "point": point(), "reach_progress": reach_progress()}


if __name__ == "__main__":
    for task, (random, optimal) in baselines().items():
        print(f"{task}: random {random:.4f}, optimal {optimal:.4f}")
