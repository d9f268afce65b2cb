"""Benchmark plans: `bench run --plan` runs exactly the plan's runs (resuming and skipping like a sweep),
`bench leaderboard --plan` builds the board of exactly those runs, names the plan's hash and says what is
missing; a malformed plan fails in one line naming the key."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bench import plan as plan_lib
from leaderboard import load
from tests.runs import bench

PLAN = """\
name: tiny
about: two random-agent variants on two toy tasks
suite: toy
tasks: [reach, point]
seeds: "0"
steps: 60
settings: {run.eval_episodes: 2}
agents:
  - agent: random
  - agent: random
    settings: {run.envs: 2}
"""


def write_plan(tmp_path, text=PLAN) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


def test_plan_expands_agents_tasks_seeds_and_leaves_out_what_an_agent_cannot_act_in(tmp_path):
    plan = plan_lib.load(write_plan(tmp_path, PLAN + "  - agent: iris\n    configs: [debug]\n"))
    assert plan.tasks == ("reach", "point") and plan.seeds == (0,) and plan.steps == 60
    runs, left_out = plan.runs()
    # 2 random variants x 2 tasks x 1 seed, and IRIS (discrete actions only) on reach only
    assert len(runs) == 2 * 2 + 1
    assert {(r.agent.agent, r.task) for r in runs if r.agent.agent == "iris"} == {("iris", "reach")}
    assert len(left_out) == 1 and left_out[0].startswith("iris on point") and "continuous" in left_out[0]
    assert ("run.steps", "60") in runs[0].overrides and ("run.eval_episodes", "2") in runs[0].overrides
    resolved = plan_lib.resolve_runs(plan)
    for task in plan.tasks:  # the two random variants differ in config, so in folder
        assert len({r.config_hash for r in resolved if r.run.task == task and r.agent == "random"}) == 2
    assert plan.sha256 == hashlib.sha256((tmp_path / "plan.yaml").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "text, message",
    [
        (PLAN.replace("seeds:", "seed:"), "unknown key 'seed'. Did you mean 'seeds'?"),
        (PLAN.replace("agent: random\n    settings", "agent: randon\n    settings"), "unknown agent 'randon'"),
        (PLAN.replace("[reach, point]", "[reach, pointt]"), "unknown task 'pointt'"),
        (PLAN.replace("steps: 60", "steps: -5"), "steps: expected a positive whole number"),
        (PLAN.replace('"0"', '"0,0"'), "seed 0 given more than once"),
        ("name: x\nsuite: toy\n", "missing 'agents'"),
        (PLAN + "  - agent: random\n", "listed twice"),
        (PLAN.replace("  - agent: random\n    settings", "  - agent: random\n    preset: [x]\n    settings"),
         "unknown key 'preset'"),
    ],
)
def test_malformed_plans_fail_in_one_line(tmp_path, capsys, text, message):
    from bench import cli

    code = cli.main(["run", "--plan", str(write_plan(tmp_path, text)), "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_run_plan_then_leaderboard_of_exactly_its_runs(tmp_path):
    path = write_plan(tmp_path)
    root = tmp_path / "runs"
    first = bench("run", "--plan", path, "--parallel", "2", "--logdir", root, root=root)
    assert "4 runs, 0 finished, 4 to run" in first.stderr, first.stderr
    manifests = sorted(root.rglob("manifest.json"))
    assert len(manifests) == 4 and all(json.loads(m.read_text())["status"] == "finished" for m in manifests)
    again = bench("run", "--plan", path, "--logdir", root, root=root)
    assert "4 runs, 4 finished, 0 to run" in again.stderr
    # a run outside the plan under the same root (another config) is not read: were it read, its folder name
    # would not match its manifest and the board would list it as skipped
    stranger = manifests[0].parent.parent.parent / "0123456789" / "seed0"
    shutil.copytree(manifests[0].parent, stranger)
    out = tmp_path / "board"
    bench("leaderboard", "--plan", path, "--runs", root, "--out", out, "--reps", "50", "--no-plots", "--quiet",
          root=root)  # fmt: skip
    board = json.loads((out / "leaderboard.json").read_text())
    text = json.dumps(board)
    assert plan_lib.load(path).sha256[:12] in text and "4 of 4 planned runs found finished" in text
    assert board["tasks"] == ["reach", "point"] and "0123456789" not in text
    assert "budget: the plan's 60 agent steps" in text
    # one row per plan entry, named by the entry (the agent is listed twice, so with its settings)
    assert sorted(row["method"] for row in board["rows"]) == ["random[defaults]", "random[run.envs=2]"]
    assert all(row["note"].startswith("config: random@") for row in board["rows"])
    # an entry whose runs have another config hash on one task (a task preset) is still one row
    info = dataclasses.replace(load.suite_info("toy"), budget=60)
    resolved = plan_lib.resolve_runs(plan_lib.load(path))
    hashes = {r.run.task: r.config_hash for r in resolved if r.label == "random[defaults]"}
    other = next(r for r in resolved if r.label != "random[defaults]" and r.run.task == "point")
    only = {r.key: r.label for r in resolved if r.label == "random[defaults]" and r.run.task == "reach"}
    only[other.key] = "random[defaults]"  # the defaults entry's point run made with another config
    (method,) = load.load_runs([root], info, load.LoadReport(), only=only)
    assert method.label == "random[defaults]" and sorted(method.raw) == ["point", "reach"]
    assert method.note == (f"config: random@{other.config_hash} on point; random@{hashes['reach']} on reach")
    # a missing run is named
    shutil.rmtree(manifests[0].parent)
    bench("leaderboard", "--plan", path, "--runs", root, "--out", out, "--reps", "50", "--no-plots", "--quiet",
          root=root)  # fmt: skip
    text = (out / "leaderboard.json").read_text()
    assert "3 of 4 planned runs found finished; missing 1: " + "/".join(manifests[0].parent.parts[-4:]) in text


def test_run_plan_refuses_flags_the_plan_decides(tmp_path, capsys):
    from bench import cli

    code = cli.main(["run", "--plan", str(write_plan(tmp_path)), "--agent", "random", "--steps", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "drop --agent --steps" in err, err


def test_missing_runs_are_listed_by_configuration_with_seed_ranges():
    from leaderboard.load import _missing_runs

    keys = [("reach", "a", "h1", f"seed{n}") for n in (0, 1, 2, 4)] + [("keydoor", "b", "h2", "seed3")]
    assert _missing_runs(keys) == "keydoor/b/h2/seed3, reach/a/h1/seed0-2,4"


@pytest.mark.parametrize("name, runs", [("cpu.yaml", 130), ("atari100k_gpu.yaml", 225)])
def test_shipped_plans_load_and_resolve(name, runs):
    """Every shipped plan names real agents, presets and tasks (a typo would fail here, not hours into a run)."""
    plan = plan_lib.load(Path(__file__).parent.parent / "plans" / name)
    resolved = plan_lib.resolve_runs(plan)
    assert len(resolved) == runs and len({r.key for r in resolved}) == runs
