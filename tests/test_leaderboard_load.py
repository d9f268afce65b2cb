"""Reading run folders and published files: protocols, reported skips, and clear errors on bad input."""

import gzip
import json
import math

import pytest

from leaderboard import board, load, normalize
from leaderboard.load import LoadReport
from tests.test_leaderboard_fakes import episode, write_run


def _toy(protocol=None):
    return load.suite_info("toy", protocol)


def _load(root, info=None, **options):
    report = LoadReport()
    methods = load.load_runs([root], info or _toy(), report, **options)
    return methods, report


def test_final_eval_mean_of_final_episodes_with_broken_excluded(tmp_path):
    episodes = [
        episode(1000, 9.0),
        episode(20_000, 1.0, mode="eval", final=True),
        episode(20_000, 4.0, mode="eval", final=True, index=1),
        episode(20_000, 100.0, mode="eval", final=True, broken=True, index=2),  # worker crashed: excluded
        episode(10_000, 50.0, mode="eval", final=False),  # periodic eval: not the final protocol
    ]
    write_run(tmp_path, episodes=episodes)
    (method,), report = _load(tmp_path)
    assert method.raw == {"reach": [2.5]}
    assert method.broken_episodes == 1
    assert method.kind == "runs" and method.protocol == "final_eval"
    assert report.skipped == []


def test_train_window_uses_the_last_window_of_the_budget(tmp_path):
    info = load.suite_info("atari100k", "train_window")
    assert info.window == 2_500  # the Atari suite's eval_window: DreamerV3's 390k-400k frames in agent steps
    episodes = [
        episode(50_000, 1000.0, frames_per_step=4),
        episode(97_500, 1.0, frames_per_step=4),  # on the window's edge: (97.5k, 100k] excludes it
        episode(97_501, 10.0, frames_per_step=4),
        episode(100_000, 20.0, frames_per_step=4),
        episode(100_000, 5000.0, frames_per_step=4, broken=True),
    ]
    write_run(tmp_path, suite="atari100k", task="pong", agent="dreamerv3", budget=100_000, episodes=episodes)
    (method,), _ = _load(tmp_path, info)
    assert method.raw == {"pong": [15.0]}


def test_crafter_score_over_all_training_episodes(tmp_path):
    info = load.suite_info("crafter")
    assert info.protocol == "crafter_score"
    names = normalize.CRAFTER_ACHIEVEMENTS
    # two episodes: collect_wood in both (100%), wake_up in one (50%), the other 20 never (0%)
    first = {f"achievement_{n}": float(n in ("collect_wood", "wake_up")) for n in names}
    second = {f"achievement_{n}": float(n == "collect_wood") for n in names}
    episodes = [episode(10, 1.0, **first), episode(20, 1.0, **second, index=1)]
    write_run(
        tmp_path, suite="crafter", task="crafter", agent="dreamerv3", budget=1_000_000, episodes=episodes
    )
    (method,), _ = _load(tmp_path, info)
    expected = math.exp((math.log(101) + math.log(51)) / 22) - 1
    assert method.raw["crafter"][0] == pytest.approx(expected)


def test_minihack_success_and_bbs_objects(tmp_path):
    minihack = load.suite_info("minihack")
    episodes = [episode(10, 1.0, success=True), episode(20, 0.0, success=False, index=1),
                episode(30, 0.5, success=1.0, index=2)]  # fmt: skip
    write_run(
        tmp_path, suite="minihack", task="keycorridor4", agent="thick", budget=1_000_000, episodes=episodes
    )
    (method,), _ = _load(tmp_path, minihack)
    assert method.raw["keycorridor4"] == [pytest.approx(2 / 3)]
    bbs = load.suite_info("bbs")
    episodes = [episode(625_000, 3.0, mode="eval", final=True, objects_returned=3.0, score=0.6),
                episode(625_000, 5.0, mode="eval", final=True, objects_returned=5.0, score=1.0, index=1)]  # fmt: skip
    write_run(tmp_path, suite="bbs", task="distract0_size1.0", agent="vsg", budget=625_000, episodes=episodes)
    (method,), _ = _load(tmp_path, bbs)
    assert method.raw["distract0_size1.0"] == [pytest.approx(0.8)]


def test_runs_are_grouped_by_agent_and_config_hash(tmp_path):
    for seed in range(3):
        write_run(tmp_path, seed=seed)
    write_run(tmp_path, seed=0, variant=1)
    write_run(tmp_path, task="keydoor", seed=0)
    methods, _ = _load(tmp_path)
    runs = {m.label: m.runs_per_task() for m in methods}
    assert sorted(runs.values(), key=len) == [{"reach": 1}, {"reach": 3, "keydoor": 1}]
    assert all(label.startswith("random@") for label in runs)


def test_unusable_runs_are_reported_and_skipped(tmp_path):
    write_run(tmp_path, seed=1, status="running", agent_steps=500)
    write_run(tmp_path, seed=2, budget=1000)  # a debug run with its own budget
    write_run(tmp_path, seed=3, episodes=[])
    write_run(tmp_path, seed=4, episodes=[episode(100, 1.0)])  # no final evaluation
    (write_run(tmp_path, seed=5) / "scores.jsonl").unlink()
    (write_run(tmp_path, seed=6) / "config.yaml").unlink()
    write_run(tmp_path, seed=7, agent_steps=10)  # "finished" but short of its own budget
    write_run(tmp_path, seed=8, status="stopped", agent_steps=500)  # Ctrl-C, resumable
    methods, report = _load(tmp_path)
    assert methods == []
    reasons = {folder.rsplit("/", 1)[-1]: reason for folder, reason in report.skipped}
    assert "unfinished" in reasons["seed1"]
    assert "budget" in reasons["seed2"] and "--any-budget" in reasons["seed2"]
    assert reasons["seed3"] == "scores.jsonl has no episodes"
    assert "no episodes under the final_eval protocol" in reasons["seed4"]
    assert reasons["seed5"] == "no scores.jsonl"
    assert reasons["seed6"] == "no config.yaml"
    assert "finished after 10" in reasons["seed7"]
    assert "unfinished (status 'stopped'" in reasons["seed8"]
    # --any-budget takes the debug run
    methods, _ = _load(tmp_path, any_budget=True)
    assert [m.runs_per_task() for m in methods] == [{"reach": 1}]


def _corrupt(folder, name, transform):
    path = folder / name
    path.write_text(transform(path.read_text()))
    return path


@pytest.mark.parametrize(
    ("name", "transform", "message"),
    [
        ("scores.jsonl", lambda t: t[:-25], r"scores.jsonl:\d+: not valid JSON .*truncated"),
        ("scores.jsonl", lambda t: t.replace('"step": 2000,', '"step": "2000",', 1),
         r"scores.jsonl:1: field 'step' must be int, got str '2000'"),
        ("scores.jsonl", lambda t: t.replace('"broken": false', '"broken": 0', 1),
         r"field 'broken' must be bool"),
        ("scores.jsonl", lambda t: t.replace('"mode": "train"', '"mode": "training"', 1), r"field 'mode' must be"),
        ("scores.jsonl", lambda t: t.replace('"return": 0.5, ', "", 1), r"missing field 'return'"),
        ("scores.jsonl", lambda t: t + "[1, 2]\n", r"expected a JSON object"),
        ("manifest.json", lambda t: t[: len(t) // 2], r"manifest.json: not valid JSON"),
        ("manifest.json", lambda t: t.replace('"seed": 0', '"seed": 0.0'), r"field 'seed' must be int"),
        ("manifest.json", lambda t: t.replace('"status": "finished"', '"status": "done"'), r"'status' must be"),
        ("manifest.json", lambda t: t.replace('"task": "reach"', '"task": "keydoor"'), r"folder layout does not match"),
        ("config.yaml", lambda t: t.replace("train_ratio: 32.0", "train_ratio: 64.0"), r"hashes to .* config_hash"),
        ("config.yaml", lambda t: "run: [unclosed", r"config.yaml: not valid YAML"),
        ("metrics.jsonl", lambda t: t.replace('"step": 1000', '"step": -1'), r"metrics.jsonl:1: field 'step' must be >= 0"),
    ],
)  # fmt: skip
def test_malformed_files_raise_errors_naming_file_and_field(tmp_path, name, transform, message):
    folder = write_run(tmp_path)
    _corrupt(folder, name, transform)
    with pytest.raises(ValueError, match=message):
        _load(tmp_path)
    # --skip-invalid reports it instead, and still loads nothing from that folder
    methods, report = _load(tmp_path, skip_invalid=True)
    assert methods == [] and report.skipped[0][1].startswith("invalid: ")


def test_unknown_suite_and_protocol_are_clear_errors():
    with pytest.raises(KeyError, match="unknown suite 'atari'"):
        load.suite_info("atari")
    with pytest.raises(ValueError, match="cannot be scored under 'crafter_score'"):
        load.suite_info("toy", "crafter_score")
    with pytest.raises(ValueError, match="no window"):
        load.suite_info("toy", "train_window")


def test_duplicate_runs_across_roots(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_run(first)
    write_run(second)
    report = LoadReport()
    (method,) = load.load_runs([first, second], _toy(), report)
    assert method.runs_per_task() == {"reach": 1}
    assert "duplicate of" in report.skipped[0][1]
    write_run(second, episodes=[episode(20_000, 7.0, mode="eval", final=True)])
    with pytest.raises(ValueError, match="appears twice with different scores"):
        load.load_runs([first, second], _toy(), LoadReport())


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        load.load_runs([tmp_path / "nope"], _toy(), LoadReport())


def test_reading_published_formats(tmp_path):
    curves = [{"task": "dmc_walker_walk", "method": "m", "seed": 0, "xs": [0, 500, 1000], "ys": [1, 2, 3]}]
    plain, zipped = tmp_path / "c.json", tmp_path / "c.json.gz"
    plain.write_text(json.dumps(curves))
    zipped.write_bytes(gzip.compress(json.dumps(curves).encode()))
    assert load.read_curves(plain) == load.read_curves(zipped) == curves
    bad = [dict(curves[0], ys=[1, 2])]
    plain.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="xs has 3 points but ys has 2"):
        load.read_curves(plain)
    plain.write_text(json.dumps([dict(curves[0], seed=True)]))
    with pytest.raises(ValueError, match="'seed' must be an int or str"):
        load.read_curves(plain)
    zipped.write_bytes(gzip.compress(b"[1, 2")[:-8])
    with pytest.raises(ValueError, match="c.json.gz"):
        load.read_curves(zipped)
    scores = tmp_path / "s.json"
    scores.write_text(json.dumps({"Pong": [1.0, "2"]}))
    with pytest.raises(ValueError, match="task 'Pong' run 1 must be a finite number"):
        load.read_final_scores(scores)
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"M": {"crafter": {"mean": 1.0, "std": "x"}}}))
    with pytest.raises(ValueError, match="'std' must be a number or null"):
        load.read_table(table)


def test_curve_references_leave_out_runs_without_points_in_the_window():
    info = load.suite_info("atari100k")
    report = LoadReport()
    (method,) = load.load_references(info, report, ["DreamerV3 (2024)"])
    assert method.protocol == "train_window"
    # 8 of 130 runs end no episode within (390k, 400k] frames (e.g. every up_n_down seed but one)
    assert len(method.excluded) == 8
    assert sum(method.runs_per_task().values()) == 122
    assert method.runs_per_task()["up_n_down"] == 1
    with pytest.raises(KeyError, match="no reference 'Nope'"):
        load.load_references(info, report, ["Nope"])


def test_leaderboard_level_errors(tmp_path):
    write_run(tmp_path)
    with pytest.raises(KeyError, match="unknown task"):
        board.build("toy", roots=[tmp_path], reps=10, tasks=["nope"])
    with pytest.raises(KeyError, match="no method 'x'"):
        board.build("toy", roots=[tmp_path], reps=10, methods=["x"])
    with pytest.raises(KeyError, match="--compare: no method"):
        board.build("toy", roots=[tmp_path], reps=10, tasks=["reach"], compare=[("a", "b")])
    built = board.build("toy", roots=[tmp_path], reps=10)
    (row,) = built.rows
    assert not row.in_aggregate and "no scores on 3 of 4 tasks: keydoor, point, reach_progress" in row.why_not
