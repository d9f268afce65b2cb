"""The vectorised stratified bootstrap against hand-computed values and against rliable itself."""

import json
from importlib import resources

import numpy as np
import pytest
import scipy.stats
from rliable import metrics as rly

from leaderboard import aggregate
from leaderboard.aggregate import ScoreSet


def test_metrics_by_hand():
    # runs x tasks; task means 0.5, 0.5, 1.0; pooled sorted 0 0 .5 .5 1 2; trim_mean cuts int(1.5) = 1 each end
    scores = ScoreSet.from_matrix(np.array([[0.0, 0.5, 2.0], [1.0, 0.5, 0.0]]))
    points = aggregate.point_estimates(scores)
    assert points["mean"] == pytest.approx(2 / 3)
    assert points["median"] == pytest.approx(0.5)
    assert points["iqm"] == pytest.approx((0 + 0.5 + 0.5 + 1) / 4)
    assert points["optimality_gap"] == pytest.approx(1 - (0 + 0.5 + 1 + 1 + 0.5 + 0) / 6)
    stats = aggregate.bootstrap(scores, reps=10, seed=0, label="x", taus=np.array([-1.0, 0.0, 0.5, 2.0]))
    # fraction of runs strictly above tau
    np.testing.assert_allclose(stats.profile.point, [1.0, 4 / 6, 2 / 6, 0.0])


def test_ragged_metrics_by_hand():
    # task a: runs 0 and 1, task b: one run 4. Every task weighs the same: b's run counts twice.
    scores = ScoreSet.from_mapping(["a", "b"], {"a": [0.0, 1.0], "b": [4.0]})
    assert scores.ragged
    points = aggregate.point_estimates(scores)
    assert points["mean"] == pytest.approx((0.5 + 4.0) / 2)
    assert points["median"] == pytest.approx((0.5 + 4.0) / 2)
    # weights 1, 1, 2 over sorted 0, 1, 4; the middle half of the weight [1, 3] holds 1 (weight 1) and 4 (1)
    assert points["iqm"] == pytest.approx((1.0 + 4.0) / 2)
    assert points["optimality_gap"] == pytest.approx(1 - (0.5 + 1.0) / 2)


@pytest.mark.parametrize("shape", [(5, 26), (10, 3), (1, 4), (7, 1)])
def test_point_estimates_match_rliable(shape):
    matrix = np.random.default_rng(sum(shape)).gamma(1.0, size=shape)
    matrix[0, 0] = matrix[-1, -1]  # a tie
    points = aggregate.point_estimates(ScoreSet.from_matrix(matrix))
    assert points["iqm"] == pytest.approx(rly.aggregate_iqm(matrix), rel=1e-12)
    assert points["median"] == pytest.approx(rly.aggregate_median(matrix), rel=1e-12)
    assert points["mean"] == pytest.approx(rly.aggregate_mean(matrix), rel=1e-12)
    assert points["optimality_gap"] == pytest.approx(rly.aggregate_optimality_gap(matrix), rel=1e-12)


def _resampled_matrix(pooled, counts_row, scores: ScoreSet) -> list[np.ndarray]:
    """The explicit resample that a row of multiplicities stands for, task by task."""
    return [
        np.repeat(values, counts_row[columns])
        for values, columns in zip(pooled.task_sorted, pooled.task_columns)
    ]


def test_each_replicate_equals_the_metrics_of_its_explicit_resample():
    matrix = np.random.default_rng(3).normal(0.5, 0.6, size=(6, 5))
    scores = ScoreSet.from_matrix(matrix)
    pooled = aggregate._Pooled(scores, 1.0)
    counts = pooled.multiplicities(np.random.default_rng(0), 20)
    values = pooled.metrics(counts, np.array([0.25, 0.5]))
    for b in range(20):
        resample = np.stack(_resampled_matrix(pooled, counts[b], scores), axis=1)  # (runs, tasks)
        assert resample.shape == matrix.shape
        assert values["iqm"][b] == pytest.approx(rly.aggregate_iqm(resample), rel=1e-10)
        assert values["median"][b] == pytest.approx(rly.aggregate_median(resample), rel=1e-10)
        assert values["mean"][b] == pytest.approx(rly.aggregate_mean(resample), rel=1e-10)
        assert values["optimality_gap"][b] == pytest.approx(rly.aggregate_optimality_gap(resample), rel=1e-10)
        np.testing.assert_allclose(values["profile"][b], [np.mean(resample > 0.25), np.mean(resample > 0.5)])


def test_ragged_resampling_keeps_each_tasks_run_count():
    scores = ScoreSet.from_mapping(
        list("abcd"), {"a": [1, 2, 3], "b": [4], "c": [5, 6, 7, 8, 9], "d": [0, 1]}
    )
    pooled = aggregate._Pooled(scores, 1.0)
    counts = pooled.multiplicities(np.random.default_rng(1), 500)
    for task, columns in enumerate(pooled.task_columns):
        assert np.all(counts[:, columns].sum(axis=1) == scores.counts[task])
    # and each run of a task is drawn equally often on average
    np.testing.assert_allclose(counts[:, pooled.task_columns[2]].mean(axis=0), 1.0, atol=0.15)


def test_bootstrap_is_reproducible_and_independent_of_other_methods():
    matrix = np.random.default_rng(0).random((5, 8))
    scores = ScoreSet.from_matrix(matrix)
    first = aggregate.bootstrap(scores, reps=2500, seed=7, label="m")
    again = aggregate.bootstrap(scores, reps=2500, seed=7, label="m")
    assert first == again
    other_seed = aggregate.bootstrap(scores, reps=2500, seed=8, label="m")
    assert other_seed.metrics["iqm"].low != first.metrics["iqm"].low
    for interval in first.metrics.values():
        assert interval.low <= interval.point <= interval.high
    # the global numpy generator (which rliable uses) is neither read nor advanced
    state = np.random.get_state()[1].copy()
    aggregate.bootstrap(scores, reps=100, seed=7, label="m")
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def _atari_matrix(name: str) -> np.ndarray:
    data = resources.files("leaderboard.reference")
    load = lambda n: json.loads(data.joinpath(f"atari100k_{n}.json").read_text())
    scores, random, human = load(name), load("RANDOM"), load("HUMAN")
    games = sorted(human)
    return np.array([[(v - random[g][0]) / (human[g][0] - random[g][0]) for v in scores[g]] for g in games]).T


def test_intervals_agree_with_rliable_within_monte_carlo_error():
    """rliable (seeded through the global generator) and ours on the same published matrix: CIs from
    independent bootstraps differ only by Monte-Carlo error, a small fraction of the interval width."""
    matrix = _atari_matrix("IRIS")
    ours = aggregate.bootstrap(ScoreSet.from_matrix(matrix), reps=4000, seed=0, label="IRIS").metrics
    theirs = aggregate.rliable_intervals({"IRIS": matrix}, reps=2000, seed=0)["IRIS"]
    for name in aggregate.METRICS:
        assert ours[name].point == pytest.approx(theirs[name].point, rel=1e-12)
        width = theirs[name].high - theirs[name].low
        assert abs(ours[name].low - theirs[name].low) < 0.12 * width, name
        assert abs(ours[name].high - theirs[name].high) < 0.12 * width, name
    # rliable's own CIs are reproducible only through the global seed, which rliable_intervals sets
    assert aggregate.rliable_intervals({"IRIS": matrix}, reps=300, seed=1) == aggregate.rliable_intervals(
        {"IRIS": matrix}, reps=300, seed=1
    )


def test_probability_of_improvement_by_hand_and_against_rliable():
    x = ScoreSet.from_matrix(np.array([[1.0], [2.0]]))
    y = ScoreSet.from_matrix(np.array([[1.0], [3.0]]))
    # pairs (1,1) tie 0.5, (1,3) 0, (2,1) 1, (2,3) 0
    interval, tasks = aggregate.probability_of_improvement(x, y, reps=50, seed=0, label_x="x", label_y="y")
    assert interval.point == pytest.approx(1.5 / 4)
    assert tasks == ("0",)
    rng = np.random.default_rng(5)
    mx, my = rng.integers(0, 4, size=(6, 7)).astype(float), rng.integers(0, 4, size=(9, 7)).astype(float)
    interval, _ = aggregate.probability_of_improvement(
        ScoreSet.from_matrix(mx), ScoreSet.from_matrix(my), reps=500, seed=0, label_x="x", label_y="y"
    )
    assert interval.point == pytest.approx(rly.probability_of_improvement(mx, my), rel=1e-12)
    assert interval.low <= interval.point <= interval.high


def test_improvement_replicates_equal_their_explicit_resamples():
    rng = np.random.default_rng(2)
    x = ScoreSet.from_mapping(["a", "b"], {"a": rng.integers(0, 3, 4).astype(float), "b": rng.random(2)})
    y = ScoreSet.from_mapping(["a", "b"], {"a": rng.integers(0, 3, 3).astype(float), "b": rng.random(5)})
    px, py = aggregate._Pooled(x, 1.0), aggregate._Pooled(y, 1.0)
    cx = px.multiplicities(np.random.default_rng(0), 10)
    cy = py.multiplicities(np.random.default_rng(1), 10)
    values = aggregate._improvement(px, py, cx, cy, [(0, 0), (1, 1)])
    for b in range(10):
        rx, ry = _resampled_matrix(px, cx[b], x), _resampled_matrix(py, cy[b], y)
        expected = np.mean([
            np.mean([(u > v) + 0.5 * (u == v) for u in rx[t] for v in ry[t]]) for t in range(2)
        ])  # fmt: skip
        assert values[b] == pytest.approx(expected)


def test_scoreset_rejects_bad_input():
    with pytest.raises(ValueError, match="no scores for task 'b'"):
        ScoreSet.from_mapping(["a", "b"], {"a": [1.0]})
    with pytest.raises(ValueError, match="non-finite"):
        ScoreSet.from_mapping(["a"], {"a": [1.0, float("nan")]})
    with pytest.raises(ValueError, match="reps"):
        aggregate.bootstrap(ScoreSet.from_mapping(["a"], {"a": [1.0]}), reps=0, seed=0, label="x")


def test_trim_matches_scipy_on_equal_counts():
    values = np.arange(10.0).reshape(5, 2)
    assert aggregate.point_estimates(ScoreSet.from_matrix(values))["iqm"] == pytest.approx(
        scipy.stats.trim_mean(values, 0.25, axis=None)
    )


@pytest.mark.slow
def test_full_size_intervals_agree_with_rliable():
    """DER's published 100 x 26 matrix at 50,000 replicates each: ours and rliable's CIs coincide to within
    Monte-Carlo error (here a few percent of the interval width)."""
    matrix = _atari_matrix("DER")
    ours = aggregate.bootstrap(ScoreSet.from_matrix(matrix), reps=50_000, seed=0, label="DER").metrics
    theirs = aggregate.rliable_intervals({"DER": matrix}, reps=50_000, seed=0)["DER"]
    for name in aggregate.METRICS:
        width = theirs[name].high - theirs[name].low
        assert abs(ours[name].low - theirs[name].low) < 0.05 * width, name
        assert abs(ours[name].high - theirs[name].high) < 0.05 * width, name
