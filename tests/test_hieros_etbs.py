"""Hieros' time-balanced replay sampler (agents/hieros/etbs.py) against the distribution of
/work/shared/reference/hieros_s5.md ("ETBS replay"), computed here independently on a fine grid of u."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate

from agents.hieros import etbs

TAU = 0.3  # reference "ETBS replay"
DRAWS = 20_000
KS_BOUND = 1.63 / math.sqrt(DRAWS)  # Kolmogorov's 99% quantile (conservative for a discrete law)


def _position(u: np.ndarray, count: int, scale: float) -> np.ndarray:
    """The reference's index formula, with F(u) multiplied by `scale` (N, or upstream's capacity)."""
    n = count + 2
    numerator = u * (np.log(u) - np.log(n) - 1) - 2 * (np.log(2) - np.log(n) - 1)
    f = numerator / (2 * np.log(n) - n - 2 * np.log(2) + 2)
    return TAU * np.minimum(f * scale, count - 1) + (1 - TAU) * (u - 2)


def _grid_age_cdf(count: int, points: int = 2_000_000) -> np.ndarray:
    """P(age <= a): the law of int(g(u)) for u ~ U[2, N + 2] by the midpoint rule on a fine grid of u."""
    u = 2.0 + (np.arange(points) + 0.5) / points * count
    index = np.floor(_position(u, count, count)).astype(int)
    pmf_index = np.bincount(index, minlength=count) / points
    return np.cumsum(pmf_index[::-1])  # age = N - 1 - index


def _ks(ages: np.ndarray, cdf: np.ndarray) -> float:
    empirical = np.cumsum(np.bincount(ages, minlength=len(cdf))) / len(ages)
    return float(np.abs(empirical - cdf).max())


def _draw(sampler, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([sampler(rng, count) for _ in range(DRAWS)])


def test_f_is_the_cdf_of_the_log_density():
    count = 40
    n = count + 2
    norm, _ = scipy.integrate.quad(lambda x: math.log(n / x), 2, n)
    for x in (2.0, 3.5, 10.0, 27.0, float(n)):
        mass, _ = scipy.integrate.quad(lambda y: math.log(n / y), 2, x)
        assert etbs.balanced_cdf(x, count) == pytest.approx(mass / norm, abs=1e-12)


@pytest.mark.parametrize("count", [1, 2, 7, 300])
def test_documented_cdf_matches_the_grid(count):
    cdf = etbs.time_balanced_age_cdf(count)
    assert cdf.shape == (count,) and cdf[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(cdf, _grid_age_cdf(count), atol=2e-6)


def test_samples_follow_the_analytic_law_and_wrong_laws_do_not():
    count = 500
    cdf = _grid_age_cdf(count)
    ks = _ks(_draw(etbs.time_balanced_age, count), cdf)
    assert ks < KS_BOUND, f"ETBS draws are {ks:.4f} (KS) from the analytic law (bound {KS_BOUND:.4f})"

    def uniform(rng, n):
        return int(rng.integers(n))

    def with_capacity(rng, n):  # upstream's bug: F(u) times the capacity, here 4 N
        return n - 1 - int(_position(rng.uniform(2, n + 2), n, 4 * n))

    def reversed_age(rng, n):  # index read as the age (oldest windows favoured)
        return n - 1 - etbs.time_balanced_age(rng, n)

    for wrong in (uniform, with_capacity, reversed_age):
        assert _ks(_draw(wrong, count), cdf) > 3 * KS_BOUND, wrong.__name__


def test_newest_windows_are_favoured_and_the_oldest_still_sampled():
    count = 1000
    ages = _draw(etbs.time_balanced_age, count, seed=1)
    assert ages.min() >= 0 and ages.max() < count
    newest, oldest = np.mean(ages < 300), np.mean(ages >= 700)
    assert newest > 0.35 and 0.18 < oldest < 0.25  # uniform would give 0.3 and 0.3
    # the upstream bug leaves the oldest ~30% almost unsampled; the current-size formula does not
    assert np.mean(ages >= 900) > 0.04


def test_contract_small_counts_and_errors():
    rng = np.random.default_rng(0)
    assert {etbs.time_balanced_age(rng, 1) for _ in range(50)} == {0}
    assert {etbs.time_balanced_age(rng, 2) for _ in range(200)} == {0, 1}
    assert isinstance(etbs.time_balanced_age(rng, 10), int)
    first = [etbs.time_balanced_age(np.random.default_rng(5), 100) for _ in range(3)]
    assert len(set(first)) == 1  # a function of the generator only
    with pytest.raises(ValueError, match="at least one stored window"):
        etbs.time_balanced_age(rng, 0)
    with pytest.raises(ValueError, match="temperature"):
        etbs.time_balanced_age(rng, 5, temperature=1.5)


def test_registered_replay_sampler_uses_the_stored_count_not_the_capacity():
    from bench.replay import Table, make_sampler

    length, steps = 4, 403  # 400 valid windows, in a table 25 times larger
    table = Table("t", workers=1, capacity=10_000, chunk=64, seed=3)
    for t in range(steps):
        table.add(0, {"x": np.array(t, np.int64)})
    sampler = make_sampler("etbs", None)
    count = steps - length + 1
    ages = []
    for _ in range(DRAWS // 50):
        batch, positions = table.sample(50, length, sampler=sampler)
        ages += [count - 1 - start for _, start in positions]
        assert (batch["x"][:, 0] == [start for _, start in positions]).all()
    ks = _ks(np.array(ages), _grid_age_cdf(count))
    assert ks < KS_BOUND, f"replay 'etbs' windows are {ks:.4f} (KS) from the law of the stored count"
