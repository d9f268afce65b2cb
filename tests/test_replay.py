import numpy as np
import pytest

from bench.replay import Replay


def fill(replay, steps, streams=2):
    for t in range(steps):
        replay.add_batch({
            "t": np.full((streams,), t, np.int64),
            "stream": np.arange(streams),
            "latent": np.zeros((streams, 3), np.float32),
        })


def test_windows_are_consecutive_steps_of_one_stream_across_chunks():
    replay = Replay(num_streams=2, capacity=1000, chunk=7, online=False, seed=0)
    fill(replay, 50)
    batch, positions = replay.sample(64, 10)
    assert batch["t"].shape == (64, 10) and batch["latent"].shape == (64, 10, 3)
    for row, (stream, start) in enumerate(positions):
        np.testing.assert_array_equal(batch["t"][row], np.arange(start, start + 10))
        assert (batch["stream"][row] == stream).all()
    starts = {s for _, s in positions}
    assert min(starts) >= 0 and max(starts) <= 40


def test_capacity_bounds_memory_and_evicts_oldest_chunks():
    replay = Replay(num_streams=2, capacity=40, chunk=8, online=False, seed=0)
    fill(replay, 100)
    assert len(replay) <= 40
    stored_chunks = sum(len(c) for c in replay.chunks)
    assert stored_chunks * 8 <= 40 + 2 * 8
    batch, positions = replay.sample(200, 5)
    assert batch["t"].min() >= 100 - 40 // 2 - 8  # only recent steps remain
    for row, (stream, start) in enumerate(positions):
        assert start >= replay.first[stream]


def test_online_queue_trains_each_fresh_window_once_first():
    replay = Replay(num_streams=1, capacity=1000, chunk=16, online=True, seed=0)
    fill(replay, 20, streams=1)
    replay.sample(1, 5)  # starts the queue: windows that complete from now on are queued
    fill_more = [{"t": np.array([t]), "stream": np.array([0]), "latent": np.zeros((1, 3), np.float32)} for t in range(20, 35)]
    for step in fill_more:
        replay.add_batch(step)
    batch, positions = replay.sample(4, 5)
    assert positions[:3] == [(0, 20), (0, 25), (0, 30)]  # the three fresh non-overlapping windows, in order
    _, positions = replay.sample(4, 5)
    assert not set(positions[:3]) & {(0, 20), (0, 25), (0, 30)} or len(replay.online_queue) == 0


def test_recency_prefers_new_windows():
    uniform = Replay(num_streams=1, capacity=10000, chunk=64, online=False, seed=1)
    recent = Replay(num_streams=1, capacity=10000, chunk=64, online=False, recency=1.0, recency_decay=0.01, seed=1)
    for replay in (uniform, recent):
        fill(replay, 2000, streams=1)
    u = uniform.sample(500, 4)[0]["t"][:, 0].mean()
    r = recent.sample(500, 4)[0]["t"][:, 0].mean()
    assert u == pytest.approx(1000, abs=100)
    assert r > 1850  # mean age about 1/decay = 100 steps


def test_write_back_updates_stored_values():
    replay = Replay(num_streams=2, capacity=1000, chunk=4, online=False, seed=0)
    fill(replay, 30)
    batch, positions = replay.sample(3, 6)
    replay.write_back(positions, {"latent": np.ones((3, 6, 3), np.float32) * 7})
    for stream, start in positions:
        again = replay._gather([(stream, start)], 6)
        assert (again["latent"] == 7).all()


def test_save_and_load_continue_identically(tmp_path):
    replay = Replay(num_streams=2, capacity=60, chunk=8, online=True, recency=0.3, seed=3)
    fill(replay, 50)
    _, positions = replay.sample(4, 6)
    replay.write_back(positions, {"latent": np.full((4, 6, 3), 2.0, np.float32)})
    checksums = {}
    state = replay.save(tmp_path, checksums)
    restored = Replay(num_streams=2, capacity=60, chunk=8, online=True, recency=0.3, seed=999)
    restored.load(tmp_path, state)
    for _ in range(3):
        fill(replay, 5)
        fill(restored, 5)
        a, pa = replay.sample(8, 6)
        b, pb = restored.sample(8, 6)
        assert pa == pb
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # a second save only rewrites what changed
    before = dict(checksums)
    replay.save(tmp_path, checksums)
    assert set(before) <= set(checksums)


def test_inconsistent_keys_are_an_error():
    replay = Replay(num_streams=1, capacity=100, chunk=8)
    replay.add(0, {"a": np.zeros(2)})
    with pytest.raises(ValueError, match="differ from the stored keys"):
        replay.add(0, {"b": np.zeros(2)})
