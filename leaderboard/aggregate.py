"""Aggregate metrics with stratified bootstrap confidence intervals (rliable's estimators, vectorised).

rliable (Agarwal et al., 2021) defines the metrics on a (runs x tasks) matrix of normalised scores:
IQM (25% trimmed mean of all runs pooled), median and mean of the per-task means, optimality gap
`gamma - mean(min(x, gamma))`, probability of improvement `P(X > Y)` per task (Mann-Whitney U / (n_x n_y))
averaged over tasks, and performance profiles (fraction of runs above tau). CIs are percentile intervals of a
stratified bootstrap: runs are resampled with replacement within each task.

Why not call rliable: it draws from the global `np.random` (its `random_state` argument is ignored, so its CIs
are not reproducible) and recomputes each metric from scratch per replicate through `arch`, ~8 s per method
at 50,000 reps on 100 x 26. Here every replicate is a vector of multiplicities (how often each original run
was drawn); all metrics come from one cumulative sum over the runs sorted by score:

* mean / optimality gap: weighted sums; median: per-task sums through one matrix product;
* IQM: the cumulative multiplicity says which sorted runs fall inside the middle half;
* profile at tau: one minus the cumulative multiplicity at the last run <= tau;
* probability of improvement: per task, the resampled CDF of Y evaluated at each run of X.

Replicates come in fixed chunks of `CHUNK`, each from its own generator seeded by (seed, method label,
stream, chunk index): results do not depend on the order methods are processed, and the probability of
improvement reuses exactly the replicates of the aggregate metrics.

Ragged data (different run counts per task) is handled explicitly: each run of task t weighs 1 / n_t, so every
task counts equally, and the IQM trims a quarter of that weight from each end. With equal counts this is
exactly rliable's definition (scipy's `trim_mean` cuts floor(0.25 N) runs from each end); with unequal counts
rliable has no definition and refuses the matrix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

METRICS = ("iqm", "median", "mean", "optimality_gap")
METRIC_NAMES = {"iqm": "IQM", "median": "Median", "mean": "Mean", "optimality_gap": "Optimality gap"}
CHUNK = 1000  # bootstrap replicates per generator; fixed so methods share replicate boundaries
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    point: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class ScoreSet:
    """Normalised final scores of one method on a task list. Runs of a task are in a fixed order."""

    tasks: tuple[str, ...]
    per_task: tuple[np.ndarray, ...]  # one 1-D float array per task, each non-empty

    @classmethod
    def from_mapping(cls, tasks: Sequence[str], scores: Mapping[str, Sequence[float]]) -> ScoreSet:
        per_task = []
        for task in tasks:
            values = np.asarray(scores.get(task, ()), dtype=np.float64)
            if values.ndim != 1 or values.size == 0:
                raise ValueError(f"no scores for task {task!r}")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"task {task!r} has non-finite scores")
            per_task.append(values)
        if not per_task:
            raise ValueError("a score set needs at least one task")
        return cls(tuple(tasks), tuple(per_task))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, tasks: Sequence[str] | None = None) -> ScoreSet:
        """rliable's layout: (runs, tasks)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"expected a (runs, tasks) matrix, got shape {matrix.shape}")
        tasks = tuple(tasks) if tasks is not None else tuple(str(i) for i in range(matrix.shape[1]))
        return cls.from_mapping(tasks, {task: matrix[:, i] for i, task in enumerate(tasks)})

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(v) for v in self.per_task])

    @property
    def ragged(self) -> bool:
        return len(set(self.counts.tolist())) > 1


class _Pooled:
    """All runs of a score set sorted by score, with the bookkeeping every metric needs."""

    def __init__(self, scores: ScoreSet, gamma: float):
        counts = scores.counts
        self.counts = counts
        self.ragged = scores.ragged
        self.num_tasks = len(counts)
        self.max_runs = int(counts.max())
        values = np.concatenate(scores.per_task)
        task_of = np.repeat(np.arange(self.num_tasks), counts)
        order = np.argsort(values, kind="stable")
        self.size = size = len(values)
        self.sorted_values = x = values[order]
        self.steps = np.append(np.diff(x), 0.0)  # x_{i+1} - x_i, and 0 for the last run
        sorted_task = task_of[order]
        position = np.empty(size, dtype=np.int64)  # original flat index -> sorted position
        position[order] = np.arange(size)
        # (task, run index) -> sorted position, as a flat table with max_runs entries per task
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        runs = np.arange(self.max_runs)[None, :]
        self.padding = runs >= counts[:, None]  # (tasks, max_runs): slots beyond a task's n_t runs
        self.slot_position = np.where(self.padding, size, position[np.minimum(offsets[:, None] + runs, size - 1)])
        self.slot_position = self.slot_position.ravel()
        self.slot_offsets = (np.arange(self.num_tasks) * self.max_runs)[:, None]
        # Weight of each run: max_runs / n_t (1 with equal counts): every task holds max_runs of weight.
        self.weight = (self.max_runs / counts)[sorted_task]
        self.total = float(self.num_tasks * self.max_runs)
        if self.ragged:
            self.trim_low, self.trim_high = 0.25 * self.total, 0.75 * self.total
        else:  # scipy.stats.trim_mean(x, 0.25): floor(0.25 N) runs cut from each end
            cut = int(0.25 * size)
            self.trim_low, self.trim_high = float(cut), float(size - cut)
        # counts @ task_weights -> per-task means and per-task means of min(x, gamma)
        self.task_weights = np.zeros((size, 2 * self.num_tasks))
        rows = np.arange(size)
        self.task_weights[rows, sorted_task] = x / counts[sorted_task]
        self.task_weights[rows, self.num_tasks + sorted_task] = np.minimum(x, gamma) / counts[sorted_task]
        self.gamma = gamma
        self.task_columns = [np.flatnonzero(sorted_task == t) for t in range(self.num_tasks)]

    def multiplicities(self, rng: np.random.Generator, reps: int) -> np.ndarray:
        """(reps, N) int: how often each sorted run is drawn when resampling n_t runs within each task t."""
        shape = (reps, self.num_tasks, self.max_runs)
        if self.ragged:
            draws = rng.integers(0, self.counts[:, None], size=shape)
        else:
            draws = rng.integers(0, self.max_runs, size=shape, dtype=np.int32)
        draws += self.slot_offsets.astype(draws.dtype)
        bins = self.size + 1
        targets = self.slot_position.take(draws)  # (reps, tasks, runs) sorted positions
        if self.ragged:  # a task with n_t < max_runs draws only n_t runs: the other slots go to a dummy bin
            targets[:, self.padding] = self.size
        targets += (np.arange(reps, dtype=np.int64) * bins)[:, None, None]
        counts = np.bincount(targets.ravel(), minlength=reps * bins).reshape(reps, bins)
        return counts[:, : self.size]

    def identity(self) -> np.ndarray:
        return np.ones((1, self.size), dtype=np.int64)

    def metrics(self, counts: np.ndarray, taus: np.ndarray | None):
        """Every metric for each row of multiplicities `counts` (reps, N)."""
        per_task = counts.astype(np.float64) @ self.task_weights
        task_means = per_task[:, : self.num_tasks]
        out = {
            "mean": task_means.mean(axis=1),
            "median": np.median(task_means, axis=1),
            "optimality_gap": self.gamma - per_task[:, self.num_tasks :].mean(axis=1),
        }
        # cumulative weight over the sorted runs (integers with equal counts: exact)
        cumulative = np.cumsum(counts * self.weight if self.ragged else counts, axis=1)
        if taus is not None:
            below = np.searchsorted(self.sorted_values, taus, side="right")  # runs <= tau
            at_or_below = np.where(below > 0, cumulative[:, np.maximum(below - 1, 0)], 0)
            out["profile"] = 1.0 - at_or_below / self.total
        # IQM: the sorted runs' weight inside [trim_low, trim_high]; summed by parts,
        # sum_i x_i (C_i - C_{i-1}) = hi x_N - lo x_1 - sum_{i<N} C_i (x_{i+1} - x_i), C = clipped cumulative
        low, high, x = self.trim_low, self.trim_high, self.sorted_values
        clipped = np.clip(cumulative, low, high, out=np.empty(cumulative.shape))
        out["iqm"] = (high * x[-1] - low * x[0] - clipped @ self.steps) / (high - low)
        return out


def _generator(seed: int, label: str, stream: int, chunk: int) -> np.random.Generator:
    entropy = [int(seed), zlib.crc32(label.encode()), int(stream), int(chunk)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _chunks(reps: int):
    for index, start in enumerate(range(0, reps, CHUNK)):
        yield index, min(CHUNK, reps - start)


def _percentiles(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [alpha, 100 - alpha], axis=0)  # linear, as arch's percentile CIs
    return low, high


@dataclasses.dataclass(frozen=True)
class Profile:
    taus: np.ndarray
    point: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclasses.dataclass(frozen=True)
class MethodStats:
    metrics: dict[str, Interval]
    profile: Profile | None


def point_estimates(scores: ScoreSet, gamma: float = 1.0) -> dict[str, float]:
    pooled = _Pooled(scores, gamma)
    values = pooled.metrics(pooled.identity(), None)
    return {name: float(values[name][0]) for name in METRICS}


def bootstrap(
    scores: ScoreSet,
    *,
    reps: int,
    seed: int,
    label: str,
    stream: int = 0,
    gamma: float = 1.0,
    taus: np.ndarray | None = None,
    metrics: Sequence[str] = METRICS,
    advance: Callable[[int], None] | None = None,
) -> MethodStats:
    """Point estimates and percentile CIs of the metrics (and the performance profile at `taus`)."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    pooled = _Pooled(scores, gamma)
    points = pooled.metrics(pooled.identity(), taus)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in (*metrics, "profile")}
    for chunk, size in _chunks(reps):
        counts = pooled.multiplicities(_generator(seed, label, stream, chunk), size)
        values = pooled.metrics(counts, taus)
        for name in metrics:
            samples[name].append(values[name])
        if taus is not None:
            samples["profile"].append(values["profile"])
        if advance:
            advance(size)
    result = {}
    for name in metrics:
        low, high = _percentiles(np.concatenate(samples[name]))
        result[name] = Interval(float(points[name][0]), float(low), float(high))
    profile = None
    if taus is not None:
        low, high = _percentiles(np.concatenate(samples["profile"]))
        profile = Profile(np.asarray(taus, dtype=np.float64), points["profile"][0], low, high)
    return MethodStats(result, profile)


# -------------------------------------------------------------------------- probability of improvement


def _improvement(x: _Pooled, y: _Pooled, x_counts: np.ndarray, y_counts: np.ndarray, tasks) -> np.ndarray:
    """P(X > Y) (ties count half) per replicate, averaged over the tasks (pairs of task indices)."""
    total = np.zeros(x_counts.shape[0])
    for tx, ty in tasks:
        columns_x, columns_y = x.task_columns[tx], y.task_columns[ty]
        values_x, values_y = x.sorted_values[columns_x], y.sorted_values[columns_y]
        mx, my = x_counts[:, columns_x], y_counts[:, columns_y]
        cumulative_y = np.concatenate([np.zeros((my.shape[0], 1)), np.cumsum(my, axis=1)], axis=1)
        below = cumulative_y[:, np.searchsorted(values_y, values_x, side="left")]
        at_or_below = cumulative_y[:, np.searchsorted(values_y, values_x, side="right")]
        wins = (mx * (below + 0.5 * (at_or_below - below))).sum(axis=1)
        total += wins / (len(columns_x) * len(columns_y))
    return total / len(tasks)


def probability_of_improvement(
    x: ScoreSet, y: ScoreSet, *, reps: int, seed: int, label_x: str, label_y: str,
    advance: Callable[[int], None] | None = None,
) -> tuple[Interval, tuple[str, ...]]:  # fmt: skip
    """P(X > Y) over the tasks both have, with an independent stratified bootstrap of X and of Y.

    The replicates are those of `bootstrap(..., stream=0)` for each method (same seeds and chunks).
    """
    common = tuple(task for task in x.tasks if task in y.tasks)
    if not common:
        raise ValueError(f"{label_x} and {label_y} share no task")
    px, py = _Pooled(x, 1.0), _Pooled(y, 1.0)
    pairs = [(x.tasks.index(t), y.tasks.index(t)) for t in common]
    point = float(_improvement(px, py, px.identity(), py.identity(), pairs)[0])
    samples = []
    for chunk, size in _chunks(reps):
        cx = px.multiplicities(_generator(seed, label_x, 0, chunk), size)
        cy = py.multiplicities(_generator(seed, label_y, 0, chunk), size)
        samples.append(_improvement(px, py, cx, cy, pairs))
        if advance:
            advance(size)
    low, high = _percentiles(np.concatenate(samples))
    return Interval(point, float(low), float(high)), common


# ------------------------------------------------------------------------------------ rliable itself


@contextlib.contextmanager
def seeded_global_numpy(seed: int):
    """rliable samples from the global `np.random` whatever `random_state` says: seed it, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def rliable_intervals(matrices: Mapping[str, np.ndarray], *, reps: int, seed: int) -> dict[str, dict[str, Interval]]:
    """The same four metrics computed by rliable itself (slow; for cross-checks). Reproducible per seed."""
    import warnings

    from rliable import library, metrics

    functions = {
        "iqm": metrics.aggregate_iqm,
        "median": metrics.aggregate_median,
        "mean": metrics.aggregate_mean,
        "optimality_gap": metrics.aggregate_optimality_gap,
    }

    def aggregate(scores):
        return np.array([functions[name](scores) for name in METRICS])

    with seeded_global_numpy(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch 7 warns once per bootstrap
        points, intervals = library.get_interval_estimates(dict(matrices), aggregate, reps=reps)
    return {
        label: {
            name: Interval(float(points[label][i]), float(intervals[label][0, i]), float(intervals[label][1, i]))
            for i, name in enumerate(METRICS)
        }
        for label in matrices
    }
