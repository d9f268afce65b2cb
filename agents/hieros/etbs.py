"""Efficient time-balanced sampling (ETBS), Hieros' replay selector, as a pure function of the stored count.

Facts: /work/shared/reference/hieros_s5.md ("ETBS replay"). With uniform sampling, an old window has been
available for many more draws than a new one, so over a run the old data is trained on far more often.
ETBS skews each draw towards the newest windows to balance that out.

With N = `count` windows currently stored (index 0 the oldest, N - 1 the newest) and n = N + 2:

    u ~ U[2, n)
    F(x) = [x (ln x - ln n - 1) - 2 (ln 2 - ln n - 1)] / (2 ln n - n - 2 ln 2 + 2)          (x in [2, n])
    index = int(tau * min(F(u) N, N - 1) + (1 - tau) (u - 2)),   tau = 0.3
    age = N - 1 - index                       (age 0 = the newest window)

F is the CDF of the density ln(n / x) / Z on [2, n] (Z = n - 2 - 2 ln(n / 2), the negated denominator):
F(2) = 0, F(n) = 1 and F is concave, so F(u) N leans to high indices, i.e. new windows. The map
g(u) = tau min(F(u) N, N - 1) + (1 - tau)(u - 2) is strictly increasing from g(2) = 0 to g(n) = N - tau < N,
so the sampled index has the exact distribution

    P(index <= k) = (g^{-1}(k + 1) - 2) / N,    k = 0 .. N - 1,       equivalently
    P(age < a)    = 1 - (g^{-1}(N - a) - 2) / N,

which `time_balanced_age_cdf` evaluates by bisection. For large N about 0.3 * 0.37 = 11% of the probability
mass moves from the older to the newer half compared to uniform sampling.

Upstream bug not copied: upstream multiplies F(u) by the buffer *capacity* instead of the current size N, so
until the buffer is full the first term is almost always tau (N - 1) and the oldest ~30% of the windows are
almost never sampled. Here N is always the current count: the replay passes the number of valid windows in the lane now stored
(never the table's capacity). Registered as the replay sampler "etbs" (a StreamSpec's `sampler`).
"""

from __future__ import annotations

import math

import numpy as np

from bench.replay import register_sampler

TEMPERATURE = 0.3  # tau (reference "ETBS replay")


def _check(count: int, temperature: float) -> None:
    if count < 1:
        raise ValueError(f"time-balanced sampling needs at least one stored window, got count={count}")
    if not 0.0 <= temperature <= 1.0:
        raise ValueError(f"time-balanced sampling: temperature must lie in [0, 1], got {temperature}")


def balanced_cdf(x: np.ndarray | float, count: int) -> np.ndarray | float:
    """F(x), the CDF on [2, count + 2] of the density proportional to ln((count + 2) / x)."""
    n = count + 2.0
    log_n = math.log(n)
    numerator = x * (np.log(x) - log_n - 1.0) - 2.0 * (math.log(2.0) - log_n - 1.0)
    return numerator / (2.0 * log_n - n - 2.0 * math.log(2.0) + 2.0)


def balanced_position(u: np.ndarray | float, count: int, temperature: float = TEMPERATURE) -> np.ndarray | float:  # fmt: skip
    """g(u) = tau min(F(u) N, N - 1) + (1 - tau)(u - 2); its integer part is the sampled index."""
    balanced = np.minimum(balanced_cdf(u, count) * count, count - 1)
    return temperature * balanced + (1.0 - temperature) * (u - 2.0)


def time_balanced_age(rng: np.random.Generator, count: int, temperature: float = TEMPERATURE) -> int:
    """The age in [0, count) of one sampled window (0 = the newest), `count` = windows stored now."""
    _check(count, temperature)
    u = rng.uniform(2.0, count + 2.0)
    index = min(int(balanced_position(u, count, temperature)), count - 1)  # the min only guards rounding
    return count - 1 - index


def time_balanced_age_cdf(count: int, temperature: float = TEMPERATURE) -> np.ndarray:
    """P(age <= a) for a = 0 .. count - 1 (float64; the last is 1), from the inverse of g by bisection."""
    _check(count, temperature)
    # u_k solves g(u_k) = k for k = 1 .. N - 1 (g is strictly increasing on [2, N + 2]).
    targets = np.arange(1, count, dtype=np.float64)
    low, high = np.full_like(targets, 2.0), np.full_like(targets, count + 2.0)
    for _ in range(64):
        mid = 0.5 * (low + high)
        below = balanced_position(mid, count, temperature) < targets
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    index_cdf = np.append((0.5 * (low + high) - 2.0) / count, 1.0)  # P(index <= k), k = 0 .. N - 1
    # age <= a  <=>  index >= N - 1 - a
    return 1.0 - np.concatenate([[0.0], index_cdf[:-1]])[::-1]


def _make_sampler(replay_config):
    """The replay sampler factory: (rng, count of valid windows stored now) -> age. No replay settings."""
    del replay_config
    return time_balanced_age


register_sampler("etbs", _make_sampler)
