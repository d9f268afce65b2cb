"""`publish` copies a finished run's result files (only those) and the leaderboard rebuilds from them."""

import argparse

import pytest

from leaderboard import board, cli, publish
from tests.test_leaderboard_fakes import write_run


def _publish(*folders, to, **flags):
    parser = argparse.ArgumentParser()
    cli.add_publish_arguments(parser)
    argv = (
        [str(f) for f in folders]
        + ["--to", str(to)]
        + [f"--{k.replace('_', '-')}" for k, v in flags.items() if v]
    )
    return cli.run_publish(parser.parse_args(argv))


def test_publish_copies_result_files_only_and_rebuilds_the_same_leaderboard(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    folders = [write_run(runs, seed=seed) for seed in range(2)]
    for folder in folders:
        (folder / "ckpt").mkdir()
        (folder / "ckpt" / "agent-1.eqx").write_bytes(b"weights")
        (folder / "replay.npz").write_bytes(b"replay")
    assert _publish(runs, to=results) == 0  # a folder holding runs publishes each of them
    for folder in folders:
        target = results / folder.relative_to(runs)
        assert sorted(p.name for p in target.iterdir()) == ["config.yaml", "manifest.json", "metrics.jsonl",
                                                            "scores.jsonl"]  # fmt: skip
        for name in ("config.yaml", "manifest.json", "metrics.jsonl", "scores.jsonl"):
            assert (target / name).read_bytes() == (folder / name).read_bytes()
    assert capsys.readouterr().out.count("publish: ") == 2
    assert _publish(folders[0], to=results) == 0
    assert "already published" in capsys.readouterr().out
    original = board.build("toy", roots=[runs], reps=100, tasks=["reach"])
    rebuilt = board.build("toy", roots=[results], reps=100, tasks=["reach"])
    assert [r.stats.metrics for r in original.rows] == [r.stats.metrics for r in rebuilt.rows]


def test_publish_refuses_what_it_should(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    running = write_run(runs, seed=1, status="running", agent_steps=10)
    with pytest.raises(ValueError, match="not publishable: unfinished"):
        _publish(running, to=results)
    dirty = write_run(runs, seed=2, dirty=True)
    with pytest.raises(ValueError, match="uncommitted changes"):
        _publish(dirty, to=results)
    assert _publish(dirty, to=results, allow_dirty=True) == 0
    debug = write_run(runs, seed=3, budget=500)
    with pytest.raises(ValueError, match="differs from the suite budget"):
        _publish(debug, to=results)
    good = write_run(runs, seed=4)
    _publish(good, to=results)
    (good / "metrics.jsonl").write_text('{"step": 1000, "frames": 1000, "train/loss": 0.25}\n')
    with pytest.raises(ValueError, match="already holds a different copy"):
        _publish(good, to=results)
    assert _publish(good, to=results, force=True) == 0
    broken = write_run(runs, seed=5)
    (broken / "scores.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="missing field"):
        _publish(good, broken, to=results)  # one bad run: nothing of this call is written
    assert not (results / broken.relative_to(runs)).exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no run folder"):
        publish.expand_run_folders([tmp_path / "empty"])


def test_a_folder_of_runs_publishes_the_finished_ones_and_names_the_others(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    done = write_run(runs, seed=0)
    running = write_run(runs, seed=1, status="running", agent_steps=10)
    assert _publish(runs, to=results) == 0
    out = capsys.readouterr().out
    assert f"not finished, left out: {running}" in out and "publish: " in out
    assert (results / done.relative_to(runs)).exists() and not (results / running.relative_to(runs)).exists()
