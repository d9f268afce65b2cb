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
stream, chunk index): results do not depend on which other methods are on the board or in which order, and
the probability of improvement uses exactly the replicates of the aggregate metrics (`bootstrap_all`).

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
CHUNK = 500  # bootstrap replicates per generator; fixed so methods share replicate boundaries
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
    """A score set laid out for resampling: runs padded to (tasks, max_runs), plus their order by score."""

    def __init__(self, scores: ScoreSet, gamma: float):
        counts = scores.counts
        self.counts = counts
        self.ragged = scores.ragged
        self.num_tasks = tasks = len(counts)
        self.max_runs = runs = int(counts.max())
        self.slots = tasks * runs  # padded flat index t * max_runs + r
        self.padding = np.arange(runs)[None, :] >= counts[:, None]  # (tasks, max_runs)
        padded = np.zeros((tasks, runs))
        for t, values in enumerate(scores.per_task):
            padded[t, : len(values)] = values
        flat = padded.ravel()
        real = np.flatnonzero(~self.padding.ravel())
        self.order = real[np.argsort(flat[real], kind="stable")]  # padded indices of the runs by score
        self.size = size = len(real)
        self.sorted_values = x = flat[self.order]
        self.steps = np.append(np.diff(x), 0.0)  # x_{i+1} - x_i, and 0 for the last run
        # per-task means of x and of min(x, gamma) are counts . (x / n_t) within each task
        self.task_values = np.stack([padded, np.minimum(padded, gamma)]) / counts[None, :, None]
        self.task_values[:, self.padding] = 0.0
        self.gamma = gamma
        # Weight of each run: max_runs / n_t (1 with equal counts): every task holds max_runs of weight.
        self.weight = (runs / counts)[self.order // runs]
        self.total = float(tasks * runs)
        if self.ragged:
            self.trim_low, self.trim_high = 0.25 * self.total, 0.75 * self.total
        else:  # scipy.stats.trim_mean(x, 0.25): floor(0.25 N) runs cut from each end
            cut = int(0.25 * size)
            self.trim_low, self.trim_high = float(cut), float(size - cut)
        # each task's padded indices in ascending score order (for the probability of improvement)
        self.task_columns = [
            t * runs + np.argsort(padded[t, : counts[t]], kind="stable") for t in range(tasks)
        ]
        self.task_sorted = [padded[t, : counts[t]][np.argsort(padded[t, : counts[t]], kind="stable")]
                            for t in range(tasks)]  # fmt: skip

    def multiplicities(self, rng: np.random.Generator, reps: int) -> np.ndarray:
        """(reps, tasks * max_runs) int: how often each (padded) run is drawn when n_t runs are resampled
        with replacement within each task t. Padding slots stay 0."""
        shape = (reps, self.num_tasks, self.max_runs)
        if self.ragged:
            draws = rng.integers(0, self.counts[:, None], size=shape)
        else:
            draws = rng.integers(0, self.max_runs, size=shape, dtype=np.int32)
        bins = self.slots + 1
        # one add: replicate b, task t, draw r -> bin b * bins + t * max_runs + r
        base = (np.arange(reps, dtype=np.int64) * bins)[:, None, None] + (
            np.arange(self.num_tasks) * self.max_runs
        )[:, None]
        targets = np.add(draws, base, dtype=np.int64)
        if self.ragged:  # a task with n_t < max_runs draws only n_t runs: the other slots go to a dummy bin
            targets[:, self.padding] = (np.arange(reps) * bins + self.slots)[:, None]
        return np.bincount(targets.ravel(), minlength=reps * bins).reshape(reps, bins)[:, : self.slots]

    def identity(self) -> np.ndarray:
        return (~self.padding).astype(np.int64).reshape(1, -1)

    def metrics(self, counts: np.ndarray, taus: np.ndarray | None):
        """Every metric for each row of multiplicities `counts` (reps, tasks * max_runs)."""
        # einsum, not BLAS: single-threaded C loops are faster here and do not spin threads
        per_task = np.einsum("btr,ktr->kbt", counts.reshape(-1, self.num_tasks, self.max_runs).astype(np.float64),
                             self.task_values)  # fmt: skip
        out = {
            "mean": per_task[0].mean(axis=1),
            "median": np.median(per_task[0], axis=1),
            "optimality_gap": self.gamma - per_task[1].mean(axis=1),
        }
        ranked = counts.take(self.order, axis=1)  # multiplicities in ascending score order
        # cumulative weight over the sorted runs (integers with equal counts: exact)
        cumulative = np.cumsum(ranked * self.weight if self.ragged else ranked, axis=1)
        if taus is not None:
            below = np.searchsorted(self.sorted_values, taus, side="right")  # runs <= tau
            at_or_below = np.where(below > 0, cumulative[:, np.maximum(below - 1, 0)], 0)
            out["profile"] = 1.0 - at_or_below / self.total
        # IQM: the sorted runs' weight inside [trim_low, trim_high]; summed by parts,
        # sum_i x_i (C_i - C_{i-1}) = hi x_N - lo x_1 - sum_{i<N} C_i (x_{i+1} - x_i), C = clipped cumulative
        low, high, x = self.trim_low, self.trim_high, self.sorted_values
        clipped = np.clip(cumulative, low, high, out=cumulative if self.ragged else None)
        out["iqm"] = (high * x[-1] - low * x[0] - np.einsum("bn,n->b", clipped, self.steps)) / (high - low)
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


@dataclasses.dataclass(frozen=True)
class Comparison:
    x: str
    y: str
    probability: Interval
    tasks: tuple[str, ...]


def _task_pairs(x: ScoreSet, y: ScoreSet, label_x: str, label_y: str) -> tuple[tuple[str, ...], list]:
    common = tuple(task for task in x.tasks if task in y.tasks)
    if not common:
        raise ValueError(f"{label_x} and {label_y} share no task")
    return common, [(x.tasks.index(t), y.tasks.index(t)) for t in common]


def bootstrap_all(
    scores: Mapping[str, ScoreSet],
    *,
    reps: int,
    seed: int,
    pairs: Sequence[tuple[str, str]] = (),
    stream: int = 0,
    gamma: float = 1.0,
    taus: np.ndarray | None = None,
    metrics: Sequence[str] = METRICS,
    advance: Callable[[int], None] | None = None,
) -> tuple[dict[str, MethodStats], list[Comparison]]:
    """Metrics with CIs for every method, and P(X > Y) for the given pairs, from one set of replicates.

    Each chunk of replicates is drawn once per method; the aggregate metrics, the profile and every
    probability of improvement involving the method use those same multiplicities. X and Y are resampled
    independently (their generators differ), as rliable's StratifiedIndependentBootstrap does.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    pooled = {label: _Pooled(score_set, gamma) for label, score_set in scores.items()}
    points = {label: p.metrics(p.identity(), taus) for label, p in pooled.items()}
    task_pairs = {(x, y): _task_pairs(scores[x], scores[y], x, y) for x, y in pairs}
    samples = {label: {name: [] for name in (*metrics, "profile")} for label in pooled}
    improvement_samples: dict[tuple[str, str], list[np.ndarray]] = {pair: [] for pair in task_pairs}
    compared = {label for pair in task_pairs for label in pair}
    for chunk, size in _chunks(reps):
        kept = {}
        for label, p in pooled.items():
            counts = p.multiplicities(_generator(seed, label, stream, chunk), size)
            values = p.metrics(counts, taus)
            for name in metrics:
                samples[label][name].append(values[name])
            if (
                taus is not None
            ):  # float32: weight below tau, integral with equal counts (exact); 4x less memory
                samples[label]["profile"].append((values["profile"] * p.total).astype(np.float32))
            if label in compared:
                kept[label] = counts
            if advance:
                advance(size)
        for (x, y), (_, indices) in task_pairs.items():
            improvement_samples[(x, y)].append(_improvement(pooled[x], pooled[y], kept[x], kept[y], indices))
    stats = {}
    for label, pooled_set in pooled.items():
        result = {}
        for name in metrics:
            low, high = _percentiles(np.concatenate(samples[label][name]))
            result[name] = Interval(float(points[label][name][0]), float(low), float(high))
        profile = None
        if taus is not None:
            low, high = _percentiles(np.concatenate(samples[label]["profile"]).astype(np.float64))
            total = pooled_set.total
            profile = Profile(
                np.asarray(taus, dtype=np.float64), points[label]["profile"][0], low / total, high / total
            )
        stats[label] = MethodStats(result, profile)
    comparisons = []
    for (x, y), (common, indices) in task_pairs.items():
        identity = _improvement(pooled[x], pooled[y], pooled[x].identity(), pooled[y].identity(), indices)
        low, high = _percentiles(np.concatenate(improvement_samples[(x, y)]))
        comparisons.append(Comparison(x, y, Interval(float(identity[0]), float(low), float(high)), common))
    return stats, comparisons


def bootstrap(scores: ScoreSet, *, reps: int, seed: int, label: str, **options) -> MethodStats:
    """Point estimates and percentile CIs of one method's metrics (and profile at `taus`)."""
    stats, _ = bootstrap_all({label: scores}, reps=reps, seed=seed, **options)
    return stats[label]


# -------------------------------------------------------------------------- probability of improvement


def _improvement(x: _Pooled, y: _Pooled, x_counts: np.ndarray, y_counts: np.ndarray, tasks) -> np.ndarray:
    """P(X > Y) (ties count half) per replicate, averaged over the tasks (pairs of task indices)."""
    total = np.zeros(x_counts.shape[0])
    for tx, ty in tasks:
        values_x, values_y = x.task_sorted[tx], y.task_sorted[ty]
        mx, my = x_counts[:, x.task_columns[tx]], y_counts[:, y.task_columns[ty]]
        cumulative_y = np.concatenate([np.zeros((my.shape[0], 1)), np.cumsum(my, axis=1)], axis=1)
        below = cumulative_y[:, np.searchsorted(values_y, values_x, side="left")]
        at_or_below = cumulative_y[:, np.searchsorted(values_y, values_x, side="right")]
        wins = np.einsum("bi,bi->b", mx, below + 0.5 * (at_or_below - below))
        total += wins / (len(values_x) * len(values_y))
    return total / len(tasks)


def probability_of_improvement(
    x: ScoreSet, y: ScoreSet, *, reps: int, seed: int, label_x: str, label_y: str
) -> tuple[Interval, tuple[str, ...]]:
    """P(X > Y) over the tasks both have, with an independent stratified bootstrap of X and of Y."""
    if label_x == label_y:
        raise ValueError(f"cannot compare {label_x!r} with itself")
    _, (comparison,) = bootstrap_all({label_x: x, label_y: y}, reps=reps, seed=seed, pairs=[(label_x, label_y)],
                                     metrics=())  # fmt: skip
    return comparison.probability, comparison.tasks


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


def rliable_intervals(
    matrices: Mapping[str, np.ndarray], *, reps: int, seed: int
) -> dict[str, dict[str, Interval]]:
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
            name: Interval(
                float(points[label][i]), float(intervals[label][0, i]), float(intervals[label][1, i])
            )
            for i, name in enumerate(METRICS)
        }
        for label in matrices
    }
