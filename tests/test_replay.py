import json
import types

import numpy as np
import pytest

from bench.replay import Replay, Table, make_sampler, recency_age, register_sampler, uniform_age

MIXTURE = types.SimpleNamespace(recency=0.3, recency_decay=1e-4)


def fill(table, steps, lanes=2, start=0):
    for t in range(start, start + steps):
        table.add_batch({
            "t": np.full((lanes,), t, np.int64),
            "lane": np.arange(lanes),
            "latent": np.zeros((lanes, 3), np.float32),
        })


def test_windows_are_consecutive_steps_of_one_lane_across_chunks():
    table = Table("main", workers=2, capacity=1000, chunk=7, seed=0)
    fill(table, 50)
    batch, positions = table.sample(64, 10)
    assert batch["t"].shape == (64, 10) and batch["latent"].shape == (64, 10, 3)
    for row, (lane, start) in enumerate(positions):
        np.testing.assert_array_equal(batch["t"][row], np.arange(start, start + 10))
        assert (batch["lane"][row] == lane).all()
    starts = {s for _, s in positions}
    assert min(starts) >= 0 and max(starts) <= 40


def test_capacity_bounds_memory_and_evicts_oldest_chunks():
    table = Table("main", workers=2, capacity=40, chunk=8, seed=0)
    fill(table, 100)
    assert len(table) <= 40
    stored_chunks = sum(len(c) for c in table.chunks)
    assert stored_chunks * 8 <= 40 + 2 * 8
    batch, positions = table.sample(200, 5)
    assert batch["t"].min() >= 100 - 40 // 2 - 8  # only recent steps remain
    for row, (lane, start) in enumerate(positions):
        assert start >= table.first[lane]


def test_online_queue_trains_each_fresh_window_once_first_per_stream():
    table = Table("main", workers=1, capacity=1000, chunk=16, seed=0)
    fill(table, 20, lanes=1)
    table.sample(1, 5, stream="a")  # starts stream a's queue: windows that complete from now on are queued
    table.sample(1, 4, stream="b")  # a second stream with its own window length has its own queue
    fill(table, 15, lanes=1, start=20)
    _, positions = table.sample(4, 5, stream="a")
    assert positions[:3] == [(0, 20), (0, 25), (0, 30)]  # the three fresh non-overlapping windows, in order
    _, positions_b = table.sample(4, 4, stream="b")
    assert positions_b[:3] == [(0, 20), (0, 24), (0, 28)]  # (0, 32) is not complete yet
    assert not table.queues["a"].items and not table.queues["b"].items


def test_recency_prefers_new_windows():
    uniform = Table("main", workers=1, capacity=10000, chunk=64, seed=1)
    recent = Table("main", workers=1, capacity=10000, chunk=64, seed=1)
    for table in (uniform, recent):
        fill(table, 2000, lanes=1)
    u = uniform.sample(500, 4, sampler=uniform_age)[0]["t"][:, 0].mean()
    r = recent.sample(500, 4, sampler=lambda rng, n: recency_age(rng, n, 0.01))[0]["t"][:, 0].mean()
    assert u == pytest.approx(1000, abs=100)
    assert r > 1850  # mean age about 1/decay = 100 steps


def test_samplers_are_registered_by_name_and_unknown_names_are_one_line():
    assert make_sampler("uniform", MIXTURE) is uniform_age
    register_sampler("newest", lambda config: lambda rng, count: 0)
    table = Table("main", workers=1, capacity=1000, chunk=8, seed=0)
    fill(table, 30, lanes=1)
    _, positions = table.sample(3, 5, sampler=make_sampler("newest", MIXTURE))
    assert positions == [(0, 25)] * 3
    with pytest.raises(ValueError, match="unknown replay sampler 'nope'"):
        make_sampler("nope", MIXTURE)
    with pytest.raises(ValueError, match="outside"):
        table.sample(1, 5, sampler=lambda rng, count: count)


def test_write_back_updates_stored_values():
    table = Table("main", workers=2, capacity=1000, chunk=4, seed=0)
    fill(table, 30)
    batch, positions = table.sample(3, 6)
    table.write_back(positions, {"latent": np.ones((3, 6, 3), np.float32) * 7})
    for lane, start in positions:
        again = table._gather([(lane, start)], 6)
        assert (again["latent"] == 7).all()


def test_mark_last_flags_the_newest_step_of_a_lane():
    table = Table("main", workers=2, capacity=1000, chunk=4, seed=0)
    for t in range(6):
        table.add_batch({"t": np.array([t, t]), "is_last": np.zeros(2, bool)})
    table.mark_last(1)
    assert table.chunks[1][1].data["is_last"][1] and not table.chunks[0][1].data["is_last"][1]


def test_save_and_load_continue_identically_with_two_tables(tmp_path):
    mixture = make_sampler("mixture", MIXTURE)

    def make(seed):
        return Replay({"main": Table("main", workers=2, capacity=60, chunk=8, seed=seed),
                       "level1": Table("level1", workers=2, capacity=40, chunk=4, seed=seed + 1)})  # fmt: skip

    replay = make(3)
    for name in replay.tables:
        fill(replay[name], 50)
    _, positions = replay["main"].sample(4, 6, stream="train", sampler=mixture)
    replay["main"].write_back(positions, {"latent": np.full((4, 6, 3), 2.0, np.float32)})
    replay["level1"].sample(2, 3, stream="high", sampler=mixture)
    checksums = {}
    state = replay.save(tmp_path, checksums)
    restored = make(999)
    restored.load(tmp_path, state)
    for step in range(3):
        for r in (replay, restored):
            for name in r.tables:
                fill(r[name], 5, start=50 + 5 * step)
        for name, stream, length in (("main", "train", 6), ("level1", "high", 3)):
            a, pa = replay[name].sample(8, length, stream=stream, sampler=mixture)
            b, pb = restored[name].sample(8, length, stream=stream, sampler=mixture)
            assert pa == pb
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    # a second save only rewrites what changed
    before = dict(checksums)
    replay.save(tmp_path, checksums)
    assert set(before) <= set(checksums)


def test_a_save_with_queued_windows_of_numpy_lanes_is_json(tmp_path):
    """The runner writes a level table's lanes as `np.flatnonzero(write)` (numpy ints). A window queued from
    such a lane was kept with its numpy lane, and the checkpoint header then failed to serialise (a Hieros run
    on toy point stopped at step 5,000 with "Object of type int64 is not JSON serializable")."""
    table = Table("level1", workers=2, capacity=1000, chunk=8, seed=0)
    step = lambda t: {"t": np.full((2,), t, np.int64), "latent": np.zeros((2, 3), np.float32)}  # noqa: E731
    for t in range(6):
        table.add_batch(step(t), lanes=np.flatnonzero([True, True]))
    table.sample(1, 4, stream="high")  # starts the stream's queue
    for t in range(6, 12):
        table.add_batch(step(t), lanes=np.flatnonzero([False, True]))
    state = Replay({"level1": table}).save(tmp_path, {})
    assert table.queues["high"].items, "the test needs a queued window at save time"
    restored = json.loads(json.dumps(state))
    assert restored["tables"]["level1"]["queues"]["high"]["items"] == [[1, 6]]
    assert restored["tables"]["level1"]["count"] == [6, 12]


def test_inconsistent_keys_are_an_error():
    table = Table("main", workers=1, capacity=100, chunk=8)
    table.add(0, {"a": np.zeros(2)})
    with pytest.raises(ValueError, match="differ from the stored keys"):
        table.add(0, {"b": np.zeros(2)})
