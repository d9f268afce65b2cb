"""Worker crashes are recovered; bad input gets a one-line error and touches no existing result."""

import json

import pytest

from tests.runs import bench, only_run_dir, tree_digest

BASE = ["run", "--agent", "random", "--suite", "toy", "--task", "reach", "--steps", "200", "--quiet",
        "--run.save_every", "100", "--run.eval_episodes", "2"]  # fmt: skip


def test_crashed_worker_is_restarted_and_its_episode_marked_broken(tmp_path):
    bench("run", "--agent", "random", "--suite", "tests.helpers:CRASHING", "--task", "reach", "--steps", "400",
          "--run.envs", "2", "--run.log_every", "100", "--quiet", root=tmp_path)  # fmt: skip
    folder = only_run_dir(tmp_path)
    scores = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    train = [s for s in scores if s["mode"] == "train"]
    broken = [s for s in train if s["broken"]]
    assert broken, "the crashing suite should have crashed at least once"
    assert all(s["length"] == 5 for s in broken)  # it dies at step 5 of an episode
    assert any(not s["broken"] and s["length"] == 20 for s in train)  # and the run went on
    per_worker = {}
    for s in train:
        per_worker.setdefault(s["worker"], []).append(s["episode"])
    assert all(eps == list(range(len(eps))) for eps in per_worker.values())  # no episode lost or repeated
    assert json.loads((folder / "manifest.json").read_text())["status"] == "finished"
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("env/worker_restarts", 0) for m in metrics) >= 1
    # In replay, the abandoned episode ends (is_last) at its last stored step: no episode runs into the next.
    import numpy as np

    from bench.checkpoint import Checkpointer

    header = Checkpointer(folder / "ckpt").load_header()
    for worker in range(2):
        entries = sorted((e for e in header["replay"]["chunks"] if e["lane"] == worker), key=lambda e: e["index"])
        lane = {}
        for entry in entries:
            with np.load(folder / "ckpt" / "replay" / entry["obs"]) as data:
                for key in ("is_first", "is_last"):
                    lane.setdefault(key, []).append(data[key][: entry["filled"]])
        is_first, is_last = (np.concatenate(lane[k]) for k in ("is_first", "is_last"))
        starts = np.flatnonzero(is_first)[1:]
        assert is_last[starts - 1].all(), f"worker {worker}: an episode runs into the next one in replay"


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    root = tmp_path_factory.mktemp("existing")
    bench(*BASE, root=root)
    return root


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--agent", "randon", "--suite", "toy", "--task", "reach"], "unknown agent 'randon'. Did you mean 'random'?"),
        (["run", "--agent", "random", "--suite", "toys", "--task", "reach"], "unknown suite 'toys'"),
        (["run", "--agent", "random", "--suite", "toy", "--task", "rech"], "unknown task 'rech' for suite 'toy'"),
        (BASE + ["--run.stesp", "5"], "unknown config key 'run.stesp'. Did you mean 'run.steps'?"),
        (BASE + ["--run.envs", "two"], "run.envs: expected an int, got 'two'"),
        (BASE + ["--configs", "nosuchpreset"], "unknown preset 'nosuchpreset'"),
        (["run", "--agent", "random", "--suite", "toy", "--seeds", "5:2"], "selects no seed"),
    ],
)
def test_bad_input_is_one_clear_line(existing, args, message):
    before = tree_digest(existing)
    proc = bench(*args, root=existing, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error:"), proc.stderr
    assert message in lines[0]
    assert tree_digest(existing) == before


def test_corrupted_checkpoint_is_detected_and_nothing_is_touched(tmp_path):
    args = BASE[:8] + ["1000", "--quiet", "--run.save_every", "100", "--run.final_eval", "false"]
    bench(*args, root=tmp_path)
    folder = only_run_dir(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["status"] = "running"  # pretend it was killed, so the next command resumes
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for agent_file in (folder / "ckpt").glob("agent-*.eqx"):  # the latest and the previous checkpoint
        data = bytearray(agent_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        agent_file.write_bytes(bytes(data))
    before = tree_digest(tmp_path)
    proc = bench(*args, root=tmp_path, check=False)
    assert proc.returncode != 0
    assert "is corrupted (sha256" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert tree_digest(tmp_path) == before


def test_results_folder_of_a_different_config_is_refused(tmp_path):
    bench(*BASE, root=tmp_path)
    folder = only_run_dir(tmp_path)
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("train_ratio: 32.0", "train_ratio: 64.0"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["status"] = "running"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    before = tree_digest(tmp_path)
    proc = bench(*BASE, root=tmp_path, check=False)
    assert proc.returncode != 0
    assert "was written by a different config (differs at run.train_ratio)" in proc.stderr
    assert tree_digest(tmp_path) == before


def test_invalid_action_from_an_agent_is_a_clear_error(tmp_path):
    proc = bench("run", "--agent", "tests.helpers:BAD_ACTION", "--suite", "toy", "--task", "reach", "--steps", "50",
                 "--quiet", root=tmp_path, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "rejected a step: action['action']: 7 is out of range [0, 5)" in proc.stderr, proc.stderr


def test_nan_loss_stops_the_run_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    args = ["run", "--agent", "tests.helpers:TINY", "--suite", "toy", "--task", "reach", "--steps", "600", "--quiet",
            "--run.train_fill", "50", "--run.train_ratio", "8", "--run.save_every", "100", "--nan_after", "40"]  # fmt: skip
    proc = bench(*args, root=tmp_path, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite loss at update 41" in lines[0], proc.stderr
    folder = only_run_dir(tmp_path)
    header = (folder / "ckpt" / "LATEST").read_text()
    assert json.loads((folder / "manifest.json").read_text())["status"] == "running"
    # the kept checkpoint is a good one: it loads and verifies
    from bench.checkpoint import Checkpointer

    assert Checkpointer(folder / "ckpt").load_header()["run_state"]["updates"]["train"] <= 40
    assert header
