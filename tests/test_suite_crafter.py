"""Crafter: the Crafter score on a hand-made log, achievement fields, episode ends, seeding, determinism, bad
input."""

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.crafter import (
    ACHIEVEMENTS,
    SCORE_FIELDS,
    SUITE,
    CrafterEnv,
    CrafterProtocol,
    achievement_success_rates,
    crafter_score,
)


def episode(*unlocked):
    return {f"achievement_{name}": float(name in unlocked) for name in ACHIEVEMENTS}


def test_achievement_list_matches_the_package():
    import crafter

    assert ACHIEVEMENTS == tuple(crafter.constants.achievements) and len(ACHIEVEMENTS) == 22
    assert SUITE.score_fields == SCORE_FIELDS
    assert SUITE.eval_protocol == "crafter_score" and SUITE.normaliser == "crafter"


def test_crafter_score_on_a_hand_made_log():
    log = [
        episode("collect_wood", "place_table", "wake_up"),
        episode("collect_wood", "place_table"),
        episode("collect_wood"),
        episode("collect_wood"),
    ]
    rates = achievement_success_rates(log)
    assert rates["collect_wood"] == 100.0 and rates["place_table"] == 50.0 and rates["wake_up"] == 25.0
    assert sum(rates.values()) == 175.0
    # exp((ln 101 + ln 51 + ln 26 + 19 ln 1) / 22) - 1, computed by hand
    assert crafter_score(log) == pytest.approx(0.7101701174166728, rel=1e-12)
    assert crafter_score([episode("collect_wood"), episode("collect_wood", "collect_drink")]) == pytest.approx(
        0.4747633736126522, rel=1e-12
    )
    assert crafter_score([episode()]) == 0.0
    assert crafter_score([episode(*ACHIEVEMENTS)]) == pytest.approx(100.0)
    # Counts larger than one (the package's per-episode counters) still mean "unlocked".
    counted = episode("collect_wood")
    counted["achievement_collect_wood"] = 7.0
    assert crafter_score([counted]) == crafter_score([episode("collect_wood")])
    # The score is a geometric mean: it is not the arithmetic mean of the rates.
    assert crafter_score(log) < sum(rates.values()) / 22


def test_crafter_score_rejects_bad_logs():
    with pytest.raises(ValueError, match="at least one episode"):
        crafter_score([])
    incomplete = episode("collect_wood")
    del incomplete["achievement_wake_up"]
    with pytest.raises(ValueError, match="episode 0 lacks achievement fields: achievement_wake_up"):
        crafter_score([incomplete])


def test_episode_achievements_match_the_rewards():
    env = CrafterEnv()
    obs = env.reset(seed=1)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert env.act_space["action"].num_classes == 17
    rng = np.random.default_rng(1)
    unlock_steps = 0
    for _ in range(400):
        obs = env.step({"action": int(rng.integers(17))})
        reward = float(obs["reward"])
        # Published reward: +1 per first unlock, +-0.1 per health point; a step unlocks at most one here.
        assert math.isclose(reward * 10, round(reward * 10), abs_tol=1e-4)
        unlock_steps += reward > 0.5
        if obs["is_last"]:
            break
    stats = env.episode_stats()
    assert set(stats) == set(SCORE_FIELDS)
    assert set(stats.values()) <= {0.0, 1.0}
    assert sum(stats.values()) == unlock_steps >= 2  # this seed unlocks several (checked by hand)
    assert obs["is_last"] and obs["is_terminal"]  # the random player dies: a true termination


def test_step_limit_is_a_truncation():
    env = CrafterEnv(CrafterProtocol(episode_length=5))
    env.reset(seed=0)
    flags = [(bool(o["is_last"]), bool(o["is_terminal"])) for o in (env.step({"action": 0}) for _ in range(5))]
    assert flags == [(False, False)] * 4 + [(True, False)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"action": 0})


def test_seeding_and_bad_input():
    env = CrafterEnv()
    first = env.reset(seed=3)["image"]
    steps = [env.step({"action": a})["image"] for a in (1, 2, 3, 5)]
    assert not (env.reset(seed=4)["image"] == first).all()
    assert (env.reset(seed=3)["image"] == first).all()
    assert all((env.step({"action": a})["image"] == s).all() for a, s in zip((1, 2, 3, 5), steps))
    with pytest.raises(ValueError, match=r"out of range \[0, 17\)"):
        env.step({"action": 17})
    with pytest.raises(ValueError, match="expected shape"):
        env.step({"action": [1]})


def crafter_trace(seed: int, steps: int = 1000, *, ballast: int = 0) -> list[str]:
    """Digest of every step's observation, reward, episode flags and achievements under fixed random actions.
    `ballast` allocates objects first so the env's objects sit at other memory addresses."""
    kept = [object() for _ in range(ballast)]  # noqa: F841 - shifts where the world's objects are allocated
    env = CrafterEnv()
    obs = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    digests = []
    for _ in range(steps):
        obs = env.step({"action": np.int64(rng.integers(17))})
        if obs["is_last"]:
            digests.append(repr(env.episode_stats()))
            obs = env.reset(seed=seed + len(digests))
        info = (float(obs["reward"]), bool(obs["is_last"]), bool(obs["is_terminal"]), sorted(env._achievements.items()))
        digests.append(hashlib.sha256(np.ascontiguousarray(obs["image"]).tobytes() + repr(info).encode()).hexdigest())
    return digests


def test_a_chunk_lists_its_objects_in_the_order_they_were_added():
    """What the despawn rule indexes into: the package's set would list them by memory address."""
    from crafter import constants, engine, objects

    from tasks.crafter import make_deterministic

    world = engine.World((64, 64), constants.materials, (12, 12))
    make_deterministic(world)
    world.reset(seed=0)
    cows = [objects.Cow(world, (x, y)) for x in range(12) for y in range(12)]  # one 12x12 chunk
    order = np.random.default_rng(0).permutation(len(cows))
    for index in order:
        world.add(cows[index])
    world.remove(cows[order[5]])
    expected = [cows[i] for i in order if i != order[5]]
    assert list(world.chunks[world.chunk_key((0, 0))]) == expected


@pytest.mark.slow
def test_same_seed_and_actions_give_the_same_episode_in_this_and_another_process():
    """1,000 steps repeat exactly, in this process and another (resume by replay relies on it)."""
    first = crafter_trace(0)
    assert crafter_trace(0, ballast=10_000) == first
    code = "import sys; from tests.test_suite_crafter import crafter_trace; print('\\n'.join(crafter_trace(0)))"
    root = Path(__file__).resolve().parent.parent
    other = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600,
                           check=True).stdout.splitlines()  # fmt: skip
    assert other == first
