"""A run killed with SIGKILL at a random point and started again equals an uninterrupted run."""

import json
import os
import random
import signal
import time

import pytest

from tests.runs import bench, bench_popen, final_agent_bytes, only_run_dir

COMMON = ["--suite", "toy", "--task", "reach", "--seed", "3", "--run.envs", "2", "--run.save_every", "40",
          "--run.log_every", "50", "--run.eval_episodes", "3", "--quiet"]  # fmt: skip
AGENTS = {
    "random": ["--agent", "random", "--steps", "3000"],
    "tiny": ["--agent", "tests.helpers:TINY", "--steps", "1500", "--run.train_fill", "60", "--run.train_ratio", "8"],
    "two_streams": ["--agent", "tests.helpers:TWO_STREAMS", "--steps", "1500", "--run.train_fill", "60"],
}


def kill_at_random_point(args, root, rng, total):
    """SIGKILL the run once its checkpoints pass a random step, plus a random few milliseconds."""
    target = rng.randrange(total // 5, total * 3 // 4)
    proc = bench_popen("run", *args, root=root)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        found = list(root.rglob("ckpt/LATEST"))
        if found and int(found[0].read_text().split("-")[1].split(".")[0]) >= target:
            break
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return target


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_sigkill_and_resume_gives_the_same_run(agent, tmp_path):
    args = AGENTS[agent] + COMMON
    bench("run", *args, root=tmp_path / "straight")
    straight = only_run_dir(tmp_path / "straight")

    killed_root = tmp_path / "killed"
    total = int(args[args.index("--steps") + 1])
    target = kill_at_random_point(args, killed_root, random.Random(agent), total)
    bench("run", *args, root=killed_root)
    folder = only_run_dir(killed_root)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    resumed_from = [s["resumed_from_step"] for s in manifest["segments"]]
    assert resumed_from[0] is None and resumed_from[1] >= target  # really resumed mid-run

    straight_scores = (straight / "scores.jsonl").read_text()
    resumed_scores = (folder / "scores.jsonl").read_text()
    assert resumed_scores == straight_scores  # same episodes: none lost, none duplicated
    episodes = [json.loads(line) for line in straight_scores.splitlines()]
    keys = [(e["mode"], e["worker"], e["episode"], e.get("eval_round")) for e in episodes]
    assert len(keys) == len(set(keys))
    assert final_agent_bytes(folder) == final_agent_bytes(straight)  # identical final agent state on CPU
    metrics = lambda f: [{k: v for k, v in json.loads(l).items() if not k.startswith("perf/")}  # noqa: E731
                         for l in (f / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert metrics(folder) == metrics(straight)


def test_ctrl_c_in_a_terminal_then_resume_gives_the_same_run(tmp_path):
    """SIGINT to the whole process group (what Ctrl-C in a terminal sends) reaches the env workers too: they
    must ignore it, so that no episode is recorded as broken and the resumed run equals an uninterrupted one."""
    args = AGENTS["tiny"] + COMMON
    bench("run", *args, root=tmp_path / "straight")
    straight = only_run_dir(tmp_path / "straight")
    root = tmp_path / "stopped"
    proc = bench_popen("run", *args, root=root, own_group=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        found = list(root.rglob("ckpt/LATEST"))
        if found and int(found[0].read_text().split("-")[1].split(".")[0]) >= 400:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    bench("run", *args, root=root)
    folder = only_run_dir(root)
    assert (folder / "scores.jsonl").read_text() == (straight / "scores.jsonl").read_text()
    assert final_agent_bytes(folder) == final_agent_bytes(straight)
    assert [s["resumed_from_step"] is None for s in json.loads((folder / "manifest.json").read_text())["segments"]] == [True, False]


def test_finished_run_is_skipped(tmp_path):
    args = AGENTS["random"][:2] + ["--steps", "100"] + COMMON
    bench("run", *args, root=tmp_path)
    folder = only_run_dir(tmp_path)
    before = (folder / "scores.jsonl").read_text()
    again = bench("run", *args[:-1], root=tmp_path)
    assert "already finished" in again.stderr
    assert (folder / "scores.jsonl").read_text() == before


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_stop_signal_saves_marks_stopped_exits_130_and_the_same_command_resumes(stop_signal, tmp_path):
    args = ("run", "--agent", "random", "--suite", "toy", "--task", "reach", "--steps", "6000", "--quiet",
            "--run.log_every", "100", "--run.final_eval", "false")  # fmt: skip
    proc = bench_popen(*args, root=tmp_path)
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline and proc.poll() is None:
        found = list(tmp_path.rglob("metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            metrics = found[0]
            break
        time.sleep(0.05)
    assert metrics is not None, "the run did not log in time"
    proc.send_signal(stop_signal)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    folder = metrics.parent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "stopped"
    stopped_at = manifest["agent_steps"]
    assert 0 < stopped_at < 6000
    bench(*args, root=tmp_path)  # the same command resumes from the checkpoint and finishes
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["agent_steps"] == 6000
    assert [s["resumed_from_step"] for s in manifest["segments"]] == [None, stopped_at]
    shares = [s["wall_time"] for s in manifest["segments"]]  # each process's part of the run's wall time
    assert all(share > 0 for share in shares) and sum(shares) == pytest.approx(manifest["wall_time"], rel=1e-9)
