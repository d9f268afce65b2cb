import json
from pathlib import Path

from tests.runs import bench, only_run_dir


def test_tensorboard_and_wandb_offline(tmp_path):
    bench("run", "--agent", "random", "--suite", "toy", "--task", "reach", "--steps", "300", "--quiet",
          "--run.log_every", "100", "--run.eval_episodes", "2", "--logger.outputs", "jsonl,tensorboard,wandb",
          root=tmp_path)  # fmt: skip
    folder = only_run_dir(tmp_path)
    events = list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    offline = list((folder / "wandb").glob("offline-run-*"))
    assert offline, "W&B should have written an offline run"
    assert list(offline[0].glob("*.wandb"))
    assert (folder / "metrics.jsonl").read_text().count("\n") >= 3


def test_sweep_runs_every_task_and_seed_then_skips_finished(tmp_path):
    args = ["run", "--agent", "random", "--suite", "toy", "--seeds", "0:2", "--steps", "60", "--parallel", "2",
            "--run.final_eval", "false"]  # fmt: skip
    first = bench(*args, root=tmp_path)
    manifests = sorted(Path(tmp_path).rglob("manifest.json"))
    assert len(manifests) == 8  # 4 tasks x 2 seeds
    assert all(json.loads(m.read_text())["status"] == "finished" for m in manifests)
    assert "sweep: 8 runs (4 tasks x 2 seeds)" in first.stderr
    before = {m: m.read_text() for m in manifests}
    bench(*args, root=tmp_path)
    assert {m: m.read_text() for m in manifests} == before


def test_manifest_records_provenance(tmp_path):
    bench("run", "--agent", "random", "--suite", "toy", "--task", "point", "--steps", "60", "--quiet",
          "--run.eval_episodes", "1", root=tmp_path)  # fmt: skip
    folder = only_run_dir(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["agent_steps"] == 60
    assert manifest["protocol"]["eval_protocol"] == "final_eval" and manifest["protocol"]["size"] == 16
    assert manifest["packages"]["jax"] and manifest["hardware"]["cpus"]
    code = manifest["code"]
    assert set(code) == ({"commit", "dirty", "diff"} if code["dirty"] else {"commit", "dirty"})
    assert not code["dirty"] or (folder / code["diff"]).is_file()  # a dirty checkout's changes are kept
    assert manifest["config_hash"] == folder.parent.name
    assert "run --agent random" in manifest["command"]


def test_list_shows_agents_suites_tasks_presets(tmp_path):
    out = bench("list", root=tmp_path).stdout
    assert "random" in out and "toy" in out and "keydoor" in out
    assert bench("list", "tasks", root=tmp_path).stdout.count("tasks:") >= 1


def test_help_has_examples(tmp_path):
    for command in (["run"], ["list"], ["perf"], ["leaderboard"]):
        out = bench(*command, "--help", root=tmp_path).stdout
        assert "examples:" in out


def test_periodic_and_final_evaluation_rounds(tmp_path):
    bench("run", "--agent", "random", "--suite", "toy", "--task", "keydoor", "--steps", "300", "--quiet",
          "--run.eval_every", "100", "--run.eval_episodes", "3", "--run.envs", "2", root=tmp_path)  # fmt: skip
    folder = only_run_dir(tmp_path)
    scores = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    evals = [s for s in scores if s["mode"] == "eval"]
    rounds = sorted({(s["eval_round"], s["final"]) for s in evals})
    assert rounds == [(0, False), (1, False), (2, False), (3, True)]
    assert all(sum(1 for s in evals if s["eval_round"] == r) == 3 for r, _ in rounds)
    assert all("success" in s for s in scores)  # the suite's extra score field


def test_last_partial_log_interval_is_written(tmp_path):
    """A budget that is not a multiple of run.log_every still logs the training of its last interval."""
    bench("run", "--agent", "tests.helpers:TINY", "--suite", "toy", "--task", "reach", "--steps", "130", "--quiet",
          "--run.log_every", "100", "--run.train_fill", "20", "--run.final_eval", "false", root=tmp_path)  # fmt: skip
    folder = only_run_dir(tmp_path)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train/updates" in r]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert logged[-1]["step"] == 130
    assert logged[-1]["train/updates"] == manifest["updates"] > 0
