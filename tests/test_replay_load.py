"""Runs started from another run's replay (`--replay.load`) and runs trained only on it (`--run.offline`):
the loaded steps equal the source's, the manifest names the source, both kinds resume exactly after SIGKILL,
and a source with other spaces is a one-line error."""

import json
import random

import numpy as np
import pytest

from bench.replay_load import open_source, read_main_table
from tests.runs import bench, final_agent_bytes, only_run_dir
from tests.test_resume import kill_at_random_point

SOURCE = ["--agent", "tests.helpers:TINY", "--suite", "toy", "--task", "reach", "--seed", "1", "--steps", "300",
          "--run.train_fill", "60", "--run.envs", "2", "--quiet"]  # fmt: skip
COMMON = ["--agent", "tests.helpers:TINY", "--suite", "toy", "--task", "reach", "--seed", "3", "--run.envs", "3",
          "--run.save_every", "40", "--run.log_every", "50", "--run.eval_episodes", "3", "--run.train_fill", "60",
          "--run.train_ratio", "8", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    bench("run", *SOURCE, root=root)
    return only_run_dir(root)


def same_run_after_sigkill(args, tmp_path, total, seed):
    bench("run", *args, root=tmp_path / "straight")
    straight = only_run_dir(tmp_path / "straight")
    killed_root = tmp_path / "killed"
    target = kill_at_random_point(args, killed_root, random.Random(seed), total)
    bench("run", *args, root=killed_root)
    folder = only_run_dir(killed_root)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["segments"][1]["resumed_from_step"] >= target  # really resumed mid-run
    assert (folder / "scores.jsonl").read_text() == (straight / "scores.jsonl").read_text()
    assert final_agent_bytes(folder) == final_agent_bytes(straight)
    metrics = lambda f: [{k: v for k, v in json.loads(l).items() if not k.startswith("perf/")}  # noqa: E731
                         for l in (f / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert metrics(folder) == metrics(straight)
    return folder, manifest


def check_source_record(manifest, source):
    theirs = json.loads((source / "manifest.json").read_text())
    record = manifest["replay_source"]
    assert record["folder"] == str(source.resolve()) and record["config_hash"] == theirs["config_hash"]
    assert record["steps_loaded"] == sum(len(read_main_table(open_source(source)).lane_steps(w)["is_first"])
                                         for w in range(2))  # fmt: skip


@pytest.mark.slow  # three short runs after the source run (~1-3 min on a shared CPU)
def test_replay_started_run_continues_online_and_resumes_exactly_after_sigkill(source, tmp_path):
    args = COMMON + ["--steps", "900", "--replay.load", str(source)]
    folder, manifest = same_run_after_sigkill(args, tmp_path, 900, "replay")
    check_source_record(manifest, source)
    assert manifest["offline"] is False and manifest["agent_steps"] == 900
    scores = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    assert any(s["mode"] == "train" for s in scores)  # it went on collecting online


@pytest.mark.slow
def test_offline_run_trains_only_on_the_replay_and_resumes_exactly_after_sigkill(source, tmp_path):
    args = COMMON + ["--steps", "600", "--replay.load", str(source), "--run.offline", "true"]
    folder, manifest = same_run_after_sigkill(args, tmp_path, 600, "offline")
    check_source_record(manifest, source)
    assert manifest["offline"] is True and manifest["updates"] == 600 and manifest["env_frames"] == 0
    scores = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    assert scores and all(s["mode"] == "eval" for s in scores)  # no environment interaction but evaluation
    # The replay holds exactly the source's steps: source lane i in lane i mod 3, its first step marked
    # is_first and its last is_last; the source agent's extras are not carried over.
    ours, theirs = read_main_table(open_source(folder)), read_main_table(open_source(source))
    assert len(ours.lane_steps(2)) == 0  # the source had 2 lanes
    for lane in range(2):
        got, want = ours.lane_steps(lane), theirs.lane_steps(lane)
        assert set(got) == set(want)  # observation, action, and the agent's own extras ("memory")
        for key in ("image", "action", "reward", "is_first", "is_last", "is_terminal"):
            expected = want[key].copy()
            if key == "is_first":
                expected[0] = True
            if key == "is_last":
                expected[-1] = True
            np.testing.assert_array_equal(got[key], expected, err_msg=key)


def test_source_with_other_spaces_is_a_one_line_error(source, tmp_path):
    proc = bench("run", "--agent", "random", "--suite", "toy", "--task", "point", "--steps", "50", "--quiet",
                 "--replay.load", str(source), root=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "replay.load" in lines[0] and "another observation space" in lines[0], proc.stderr
    assert not list(tmp_path.rglob("scores.jsonl"))  # nothing was run
    proc = bench("run", "--agent", "random", "--suite", "toy", "--task", "reach", "--steps", "50", "--quiet",
                 "--run.offline", "true", root=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "--replay.load" in proc.stderr


def test_load_into_marks_cut_lanes_maps_lanes_and_keeps_only_observations_and_actions(tmp_path):
    """A hand-made source (eviction cut lane 0 mid-episode; a source extra "memory") loaded into one lane."""
    from bench.checkpoint import Checkpointer
    from bench.replay import Replay, Table
    from bench.replay_load import ReplaySource, load_into

    table = Table("main", workers=2, capacity=8, chunk=4)
    for lane, steps in ((0, 14), (1, 5)):
        for t in range(steps):
            table.add(lane, {"vector": np.full(2, 100 * lane + t, np.float32), "action": np.int32(t % 3),
                             "reward": np.float32(t), "is_first": np.bool_(t % 5 == 0), "is_last": np.bool_(t % 5 == 4),
                             "is_terminal": np.bool_(False), "memory": np.float32(-1)})  # fmt: skip
    assert table.first == [12, 0]  # eviction kept steps 12, 13 of lane 0: the middle of an episode
    Checkpointer(tmp_path / "ckpt").save(step=19, header={}, agent_tree=(), replay=Replay({"main": table}))
    spaces = {"obs": {k: {} for k in ("vector", "reward", "is_first", "is_last", "is_terminal")}, "act": {"action": {}}}
    source = ReplaySource(tmp_path, {"spaces": spaces}, {"replay": {"chunk": 4}},
                          Checkpointer(tmp_path / "ckpt").load_header())  # fmt: skip
    target = Table("main", workers=1, capacity=100, chunk=4)
    row = {"vector": np.zeros(2, np.float32), "action": np.int32(0), "reward": np.float32(0),
           "is_first": np.bool_(False), "is_last": np.bool_(False), "is_terminal": np.bool_(False),
           "latent/deter": np.ones(3, np.float16)}  # fmt: skip
    assert load_into(source, target, row) == 7
    got = target.lane_steps(0)
    assert set(got) == set(row)  # the source's "memory" is not carried over
    np.testing.assert_array_equal(got["vector"][:, 0], [12, 13, 100, 101, 102, 103, 104])
    np.testing.assert_array_equal(got["action"], [0, 1, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(got["is_first"], [1, 0, 1, 0, 0, 0, 0])  # step 12 marked: cut by eviction
    np.testing.assert_array_equal(got["is_last"], [0, 1, 0, 0, 0, 0, 1])  # each lane's last step ends it
    np.testing.assert_array_equal(got["latent/deter"], np.zeros((7, 3)))  # the new agent's extras start at 0
