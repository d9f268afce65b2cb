"""`bench verify`: a finished run rebuilt from its folder alone reruns to the same scores; any edit shows."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from bench import results, verify
from bench.config import ConfigError
from bench.runner import RunError
from tests.runs import bench, only_run_dir

SEED = 3  # not the default seed: a rerun that ignored the manifest's seed would differ


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A finished random-agent run on toy reach (seed 3, 300 steps, 3 evaluation episodes)."""
    root = tmp_path_factory.mktemp("published")
    bench("run", "--agent", "random", "--suite", "toy", "--task", "reach", "--seed", SEED, "--steps", 300,
          "--run.eval_episodes", 3, "--quiet", "--logdir", root, root=root)  # fmt: skip
    return only_run_dir(root)


@pytest.fixture(scope="module")
def rerun_root(tmp_path_factory):
    return tmp_path_factory.mktemp("rerun")


def _copy(folder, tmp_path):
    copy = tmp_path / "copy" / folder.name
    shutil.copytree(folder, copy)
    return copy


def test_a_rerun_has_the_same_scores_and_the_cli_exits_0(published, rerun_root):
    proc = bench("verify", published, "--quiet", "--logdir", rerun_root, root=rerun_root, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "same scores: all" in proc.stdout
    records = len((published / "scores.jsonl").read_text().splitlines())
    assert f"all {records} episode records identical (scores.jsonl sha256" in proc.stdout
    rerun = only_run_dir(rerun_root)
    assert rerun.parent.name == published.parent.name  # the same config hash
    assert rerun.name == f"seed{SEED}"
    hardware = json.loads((rerun / "manifest.json").read_text())["hardware"]
    assert hardware["usable_cpus"] == len(os.sched_getaffinity(0))  # XLA's CPU thread count


def test_a_changed_score_is_found_and_named(published, rerun_root, tmp_path, capsys):
    copy = _copy(published, tmp_path)
    lines = (copy / "scores.jsonl").read_text().splitlines()
    record = json.loads(lines[4])
    record["return"] = record["return"] + 0.5
    lines[4] = json.dumps(record)
    (copy / "scores.jsonl").write_text("\n".join(lines) + "\n")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["hardware"]["usable_cpus"] = 7
    manifest["segments"][-1].update(vmap=True, vmap_seeds=[SEED, SEED + 1])
    manifest["segments"][-1]["code"]["dirty"] = True
    manifest["segments"][-1]["code"].pop("diff", None)  # dirty, the changes not recorded (an older run)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = verify.verify(copy, logdir=rerun_root, quiet=True)  # the rerun from the first test is reused
    assert not result.identical
    assert result.same == 4
    assert result.first_difference.startswith("record 5 (train episode")
    assert "return" in result.first_difference and "length" not in result.first_difference
    out = capsys.readouterr().out
    assert "different scores: 4 episode records identical, then record 5" in out
    assert "published: 7\n" in out and "it may be the CPU count" in out and "taskset -c 0-6 " in out
    assert f"published: vmapped with seeds {SEED}, {SEED + 1}\n" in out and "rerun:     alone" in out
    assert "it may be vmapping" in out
    assert "code     published: " in out and "+dirty\n" in out and "it may be the uncommitted changes" in out


def test_a_recorded_patch_is_named_with_the_command_that_applies_it(published, rerun_root, tmp_path, capsys):
    copy = _copy(published, tmp_path)
    lines = (copy / "scores.jsonl").read_text().splitlines()
    lines[0] = json.dumps(json.loads(lines[0]) | {"length": json.loads(lines[0])["length"] + 1})
    (copy / "scores.jsonl").write_text("\n".join(lines) + "\n")
    patch = b"--- a/agents/random.py\n+++ b/agents/random.py\n"
    name = results.diff_name(patch)
    (copy / name).write_bytes(patch)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["segments"][0]["code"] = {"commit": "0123456789abcdef", "dirty": True, "diff": name}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert not verify.verify(copy, logdir=rerun_root, quiet=True).identical
    out = capsys.readouterr().out
    assert f"code     published: 0123456+dirty ({name})\n" in out
    assert "uncommitted changes the published run was made with" not in out  # they are recorded
    assert (f"rerun in a checkout of the published commit with its recorded changes (`git worktree add "
            f"../at-0123456 0123456 && git -C ../at-0123456 apply {(copy / name).resolve()}`") in out


def test_the_prefix_of_a_run_reruns_to_the_same_training_episodes(published, tmp_path, capsys):
    result = verify.verify(published, steps=150, logdir=tmp_path / "prefix", quiet=True)
    assert result.identical
    expected = [r for r in map(json.loads, (published / "scores.jsonl").read_text().splitlines())
                if r["mode"] == "train" and r["step"] <= 150]  # fmt: skip
    assert result.same == len(expected) > 3
    out = capsys.readouterr().out
    assert f"same scores: all {len(expected)} training episodes ended by step 150 identical" in out


def test_an_edited_config_is_refused(published, tmp_path):
    copy = _copy(published, tmp_path)
    text = (copy / "config.yaml").read_text()
    assert "  eval_episodes: 3\n" in text
    (copy / "config.yaml").write_text(text.replace("  eval_episodes: 3\n", "  eval_episodes: 4\n"))
    with pytest.raises(ConfigError, match="hashes to .* but the manifest says"):
        verify.rebuild(copy)


def test_an_unfinished_run_or_a_wrong_folder_is_refused(published, tmp_path):
    copy = _copy(published, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"status": "stopped"}))
    with pytest.raises(RunError, match="'stopped', not finished"):
        verify.rebuild(copy)
    with pytest.raises(RunError, match="not a finished run folder"):
        verify.rebuild(published.parent)
    proc = bench("verify", published.parent, root=tmp_path, check=False)
    assert proc.returncode == 2 and "not a finished run folder" in proc.stderr


def test_compare_records():
    a = [{"step": 10, "return": 1.0, "mode": "train", "episode": 0, "worker": 0},
         {"step": 20, "return": 0.0, "mode": "eval", "episode": 0, "worker": 0}]  # fmt: skip
    assert verify.compare(a, [dict(r) for r in a]).identical
    shorter = verify.compare(a, a[:1])
    assert not shorter.identical and shorter.same == 1
    assert "2 records, the rerun 1" in shorter.first_difference
    moved = verify.compare(a, [a[0], a[1] | {"step": 21}])
    assert moved.same == 1
    assert moved.first_difference == "record 2 (eval episode 0 of worker 0): step 20 published, 21 rerun"
    assert verify.train_records_until(a, 20) == a[:1]


def test_against_compares_two_finished_runs_without_rerunning(published, rerun_root, tmp_path):
    rerun = only_run_dir(rerun_root)  # the first test's rerun
    assert verify.report(published, rerun).identical
    proc = bench("verify", published, "--against", rerun, root=tmp_path, check=False)
    assert proc.returncode == 0 and "same scores: all" in proc.stdout
    shorter = verify.verify(published, steps=150, logdir=tmp_path / "short", quiet=True)
    assert verify.report(published, only_run_dir(tmp_path / "short")).same == shorter.same
    with pytest.raises(RunError, match="ran 300 steps, more than the 150"):
        verify.report(only_run_dir(tmp_path / "short"), published)
    other_seed = _copy(published, tmp_path)
    manifest = json.loads((other_seed / "manifest.json").read_text())
    (other_seed / "manifest.json").write_text(json.dumps(manifest | {"seed": SEED + 1}))
    with pytest.raises(RunError, match="not a rerun of .*another agent, task or seed"):
        verify.report(published, other_seed)


def test_against_a_run_with_other_settings_is_refused(published, tmp_path):
    copy = _copy(published, tmp_path)
    text = (copy / "config.yaml").read_text()
    assert "  train_ratio: " in text
    (copy / "config.yaml").write_text(text.replace("  train_ratio: ", "  train_ratio: 1"))
    with pytest.raises(ConfigError) as refused:
        verify.rebuild(copy)
    new_hash = re.search(r"hashes to (\w+),", str(refused.value)).group(1)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"config_hash": new_hash}))
    with pytest.raises(RunError, match="its config differs beyond steps"):
        verify.report(published, copy)
