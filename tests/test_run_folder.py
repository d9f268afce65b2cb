"""One writer per run folder; the final evaluation happens once; unusable folders are refused; bad state is not saved."""

import json
import subprocess
import sys

import pytest

from bench import runner
from tests.runs import bench, bench_popen, only_run_dir, tree_digest, wait_for_checkpoint

RANDOM = ["run", "--agent", "random", "--suite", "toy", "--task", "reach", "--quiet", "--run.eval_episodes", "3"]


def scores(folder):
    return [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    first = bench_popen(*RANDOM, "--steps", "100000", root=tmp_path)
    try:
        folder = wait_for_checkpoint(first, tmp_path)
        before = (folder / "scores.jsonl").read_text()
        second = bench(*RANDOM, "--steps", "100000", root=tmp_path, check=False)
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"is in use by process {first.pid}" in lines[0], second.stderr
        assert (folder / "scores.jsonl").read_text().startswith(before)  # the second wrote nothing
    finally:
        first.kill()
        first.wait()


def test_waiting_for_a_background_run_names_why_it_saved_no_checkpoint(tmp_path):
    def child(code):
        return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)

    with pytest.raises(AssertionError, match=r"(?s)the run ended \(3\) before its first checkpoint:\nboom"):
        wait_for_checkpoint(child("import sys; print('boom', file=sys.stderr); sys.exit(3)"), tmp_path)
    slow = child("import sys, time; print('still starting', file=sys.stderr, flush=True); time.sleep(60)")
    with pytest.raises(AssertionError, match=r"(?s)no checkpoint after 1 s; files \[\]; stderr:\nstill starting"):
        wait_for_checkpoint(slow, tmp_path, timeout=1.0)
    assert slow.poll() is not None  # killed, not left behind


def test_a_kill_after_the_final_checkpoint_does_not_evaluate_twice(tmp_path, monkeypatch):
    overrides = {"run.steps": "300", "run.eval_episodes": "3"}

    class Killed(BaseException):
        pass

    def die_before_finishing(self, status):
        if status == "finished":
            raise Killed  # as if SIGKILLed between the last checkpoint and the manifest's "finished"

    with monkeypatch.context() as patch:
        patch.setattr(runner.Run, "_end_segment", die_before_finishing)
        with pytest.raises(Killed):
            runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    folder = runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    final = [s for s in scores(folder) if s["mode"] == "eval" and s["final"]]
    assert len(final) == 3 and len({s["eval_round"] for s in final}) == 1
    assert json.loads((folder / "manifest.json").read_text())["status"] == "finished"


def test_results_without_a_usable_checkpoint_are_refused_unless_restart(tmp_path):
    overrides = {"run.steps": "200", "run.final_eval": "false"}
    folder = runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["status"] = "running"  # as if killed
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "ckpt" / "LATEST").unlink()
    before = tree_digest(tmp_path)
    with pytest.raises(runner.RunError, match=r"has results but cannot be resumed \(no checkpoint.*--restart"):
        runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    assert tree_digest(tmp_path) == before
    again = runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True, restart=True)
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["status"] == "finished" and [s["resumed_from_step"] for s in manifest["segments"]] == [None]
    assert max(s["step"] for s in scores(again)) <= 200


def test_no_checkpoint_is_saved_before_the_run_has_a_manifest(tmp_path, monkeypatch):
    """A kill right after the first checkpoint must leave a folder that resumes (a CI run saw a checkpoint and
    no manifest: the step-0 checkpoint used to come first)."""
    from bench.checkpoint import Checkpointer

    manifest_there, save = [], Checkpointer.save

    def save_and_record(self, **kwargs):
        manifest_there.append((self.folder.parent / "manifest.json").is_file())
        return save(self, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save_and_record)
    runner.run("random", "toy", "reach", overrides={"run.steps": "200"}, root=tmp_path, quiet=True)
    assert len(manifest_there) >= 2 and all(manifest_there), manifest_there


def test_a_checkpoint_without_a_manifest_starts_over_at_step_0_and_is_refused_with_results(tmp_path):
    overrides = {"run.steps": "200", "run.final_eval": "false"}
    folder = runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    (folder / "manifest.json").unlink()  # as an older bench left a run killed between its checkpoint and manifest
    before = tree_digest(tmp_path)
    with pytest.raises(runner.RunError, match=r"has results but cannot be resumed \(a checkpoint but no manifest"):
        runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    assert tree_digest(tmp_path) == before
    for name in ("scores.jsonl", "metrics.jsonl"):
        (folder / name).write_text("")  # killed at step 0: no results yet, so it starts over by itself
    runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished" and [s["resumed_from_step"] for s in manifest["segments"]] == [None]


def test_a_non_finite_state_is_never_saved(tmp_path):
    overrides = {"run.steps": "600", "run.train_fill": "50", "run.train_ratio": "8", "run.save_every": "100",
                 "nan_state_after": "40"}  # fmt: skip
    with pytest.raises(runner.NonFiniteError, match="agent state has non-finite values"):
        runner.run("tests.helpers:TINY", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    from bench.checkpoint import Checkpointer

    folder = only_run_dir(tmp_path)
    assert Checkpointer(folder / "ckpt").load_header()["run_state"]["updates"]["train"] <= 40


def test_each_segment_records_code_version_packages_and_hardware_and_a_failed_resume_adds_none(tmp_path):
    overrides = {"run.steps": "200", "run.final_eval": "false"}
    folder = runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    segment = json.loads((folder / "manifest.json").read_text())["segments"][0]
    assert {"commit", "dirty"} <= set(segment["code"]) and "jax" in segment["packages"] and segment["hardware"]
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["status"] = "running"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for agent_file in (folder / "ckpt").glob("agent-*.eqx"):  # the latest and the kept previous checkpoint
        agent_file.write_bytes(agent_file.read_bytes()[:-8])  # damaged: the resume fails its checks
    with pytest.raises(runner.RunError, match="cannot be resumed"):
        runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    assert len(json.loads((folder / "manifest.json").read_text())["segments"]) == 1


def test_a_stopped_run_exits_130_from_the_cli(tmp_path):
    proc = bench_popen(*RANDOM, "--steps", "100000", root=tmp_path)
    wait_for_checkpoint(proc, tmp_path)
    proc.terminate()  # SIGTERM, as a cluster scheduler sends
    assert proc.wait(timeout=120) == 130
    assert json.loads((only_run_dir(tmp_path) / "manifest.json").read_text())["status"] == "stopped"

