"""`bench leaderboard` and `bench publish` refuse result files that would count an episode twice, that are
not regular files, are huge or nest deeply, and runs made in part from a dirty checkout: one line each."""

import gzip
import json
import os
import re

import pytest

from bench import cli
from leaderboard import load
from tests.test_leaderboard_fakes import write_run


def _one_line(argv, capsys) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    return lines[0]


def _leaderboard(runs, tmp_path, capsys) -> str:
    return _one_line(["leaderboard", "--suite", "toy", "--tasks", "reach", "--runs", str(runs), "--out",
                      str(tmp_path / "out"), "--reps", "50", "--no-plots"], capsys)  # fmt: skip


def _publish(folder, tmp_path, capsys) -> str:
    line = _one_line(["publish", str(folder), "--to", str(tmp_path / "results")], capsys)
    assert not (tmp_path / "results").exists()
    return line


def _rewrite_scores(folder, edit):
    path = folder / "scores.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in edit(records)))
    return path


def _duplicate_train_episode(records):
    return records + [records[0]]


def _two_final_rounds(records):
    finals = [r for r in records if r["mode"] == "eval"]
    return records + [{**r, "eval_round": 1} for r in finals]


@pytest.mark.parametrize(
    "edit,message",
    [
        (_duplicate_train_episode, r"scores.jsonl:\d+: train episode 0 of worker 0 appears twice \(first at line 1\)"),
        (_two_final_rounds, r"scores.jsonl: 2 final evaluation rounds \(0, 1\); a run has one"),
    ],
)
@pytest.mark.parametrize("command", ["leaderboard", "publish"])
def test_an_episode_counted_twice_is_refused(tmp_path, capsys, edit, message, command):
    folder = write_run(tmp_path / "runs")
    path = _rewrite_scores(folder, edit)
    if command == "leaderboard":
        line = _leaderboard(tmp_path / "runs", tmp_path, capsys)
    else:
        line = _publish(folder, tmp_path, capsys)
    assert str(path) in line
    assert re.search(message, line), line


def _fifo(path):
    path.unlink()
    os.mkfifo(path)


def _folder(path):
    path.unlink()
    path.mkdir()


def _deep(path):
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")


def _deep_but_parseable(path):
    path.write_text(json.dumps({"step": 1, "frames": 1, "x": json.loads("[" * 200 + "]" * 200)}) + "\n")


@pytest.mark.parametrize(
    "name,spoil,message",
    [
        ("scores.jsonl", _fifo, "not a regular file (a FIFO)"),  # reading it would block forever
        ("manifest.json", _folder, "not a regular file (a folder)"),
        ("scores.jsonl", _deep, "nests deeper than 32 levels"),
        ("metrics.jsonl", _deep_but_parseable, "nests deeper than 32 levels"),
        ("manifest.json", _deep, "nests deeper than 32 levels"),
        ("config.yaml", _deep, "nests deeper than 32 levels"),
    ],
)
def test_files_that_are_not_plain_small_shallow_files_are_refused(tmp_path, capsys, name, spoil, message):
    folder = write_run(tmp_path / "runs")
    spoil(folder / name)
    line = _leaderboard(tmp_path / "runs", tmp_path, capsys)
    assert f"{folder / name}" in line and message in line, line


def test_a_huge_file_is_refused(tmp_path, capsys, monkeypatch):
    folder = write_run(tmp_path / "runs")
    limit = (folder / "scores.jsonl").stat().st_size - 1
    monkeypatch.setattr(load, "MAX_FILE_BYTES", limit)  # the real limit is 512 MiB; same code path
    line = _leaderboard(tmp_path / "runs", tmp_path, capsys)
    assert str(folder / "scores.jsonl") in line and f"over the {limit:,}-byte limit" in line


def test_a_gzip_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "curves.json.gz"
    path.write_bytes(gzip.compress(b"[" + b" " * 10_000 + b"]"))
    monkeypatch.setattr(load, "MAX_FILE_BYTES", 5_000)
    with pytest.raises(ValueError, match="unzips to over the 5,000-byte limit"):
        load.read_json_file(path)


@pytest.mark.parametrize(
    "manifest_edit,part",
    [
        (lambda m: m["segments"].extend([{"dirty": False}, {"dirty": True}]), "segment 2 of the run was"),
        (lambda m: m["segments"].append({"code": {"commit": "abc", "dirty": True}}), "segment 1 of the run was"),
        (lambda m: m.update(dirty=True), "the run was"),
        (lambda m: m["code"].update(dirty=True), "the run was"),
    ],
)
def test_publish_refuses_a_run_any_segment_of_which_was_dirty(tmp_path, capsys, manifest_edit, part):
    folder = write_run(tmp_path / "runs")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest_edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    line = _publish(folder, tmp_path, capsys)
    assert str(folder / "manifest.json") in line and f"{part} made from a checkout with uncommitted changes" in line
    assert cli.main(["publish", str(folder), "--to", str(tmp_path / "results"), "--allow-dirty"]) == 0
