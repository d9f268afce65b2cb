"""Sample-efficiency curves: IQM of normalised scores at fixed points of the env-frame budget, with CIs.

Each run's curve is binned on a common grid: the budget (env frames) is cut into `points` equal bins and a
run's value at a bin is its raw score over the episodes (or published curve points) that end inside the bin,
normalised per task. A run with nothing in a bin has no value there (the data is ragged at that point);
a point where some task has no value at all is left out of the method's curve and reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from leaderboard import aggregate
from leaderboard.load import Method
from leaderboard.normalize import Normaliser, SuiteScoring, reduce_episodes

CURVE_STREAM = 1000  # bootstrap stream ids of curve points: CURVE_STREAM + point index


@dataclasses.dataclass(frozen=True)
class CurvePoint:
    frames: float
    iqm: aggregate.Interval
    runs: int  # run values at this point over all tasks


@dataclasses.dataclass(frozen=True)
class SampleEfficiency:
    label: str
    points: tuple[CurvePoint, ...]
    missing_points: int  # grid points left out because some task had no value


def grid(end_frames: float, points: int) -> np.ndarray:
    if points < 1:
        raise ValueError(f"curve points must be >= 1, got {points}")
    if end_frames <= 0:
        raise ValueError("the sample-efficiency grid needs a positive frame budget")
    return np.linspace(0.0, float(end_frames), points + 1)


def binned_values(
    method: Method, tasks: Sequence[str], edges: np.ndarray, scoring: SuiteScoring, normaliser: Normaliser
) -> list[dict[str, list[float]]]:
    """Per grid point: task -> normalised values of the runs that have one there."""
    result: list[dict[str, list[float]]] = [{} for _ in range(len(edges) - 1)]
    for task in tasks:
        for curve in method.curves.get(task, []):
            bins = np.searchsorted(edges, curve.frames, side="left") - 1  # (lo, hi] -> bin index
            for index in range(len(edges) - 1):
                inside = np.flatnonzero(bins == index)
                if inside.size == 0:
                    continue
                if curve.records is not None:
                    raw = reduce_episodes(
                        scoring, [curve.records[i] for i in inside], f"{method.label} {task}"
                    )
                else:
                    raw = float(curve.values[inside].mean())
                result[index].setdefault(task, []).append(normaliser(task, raw))
    return result


def sample_efficiency(
    method: Method,
    tasks: Sequence[str],
    edges: np.ndarray,
    scoring: SuiteScoring,
    normaliser: Normaliser,
    *,
    reps: int,
    seed: int,
    advance: Callable[[int], None] | None = None,
) -> SampleEfficiency | None:
    """The method's IQM curve, or None when it has no curve data on these tasks."""
    if not any(method.curves.get(task) for task in tasks):
        return None
    points, missing = [], 0
    for index, values in enumerate(binned_values(method, tasks, edges, scoring, normaliser)):
        if any(task not in values for task in tasks):
            missing += 1
            if advance:
                advance(reps)
            continue
        scores = aggregate.ScoreSet.from_mapping(tasks, values)
        stats = aggregate.bootstrap(
            scores, reps=reps, seed=seed, label=method.label, stream=CURVE_STREAM + index, metrics=("iqm",),
            advance=advance,
        )  # fmt: skip
        points.append(CurvePoint(float(edges[index + 1]), stats.metrics["iqm"], int(scores.counts.sum())))
    return SampleEfficiency(method.label, tuple(points), missing)
