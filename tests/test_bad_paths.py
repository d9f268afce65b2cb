"""A results path the file system refuses is one line naming the path and the problem, a non-zero exit, and
no change on disk."""

import errno
import os

import pytest

from bench import cli, results
from tests.runs import tree_digest

RUN = ["run", "--agent", "random", "--suite", "toy", "--task", "reach", "--steps", "40", "--quiet",
       "--run.final_eval", "false"]  # fmt: skip


def _run(logdir, capsys):
    code = cli.main([*RUN, "--logdir", str(logdir)])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    return lines[0]


def test_a_logdir_that_is_a_file(tmp_path, capsys):
    logdir = tmp_path / "runs"
    logdir.write_text("not a folder\n")
    before = tree_digest(tmp_path)
    line = _run(logdir, capsys)
    assert str(logdir) in line and ("Not a directory" in line or "File exists" in line)
    assert tree_digest(tmp_path) == before


def test_a_read_only_logdir(tmp_path, capsys, monkeypatch):
    logdir = tmp_path / "runs"
    logdir.mkdir()
    logdir.chmod(0o555)
    if os.geteuid() == 0:  # permission bits do not bind root: refuse as a read-only folder would
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if str(path).startswith(str(logdir) + os.sep):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        line = _run(logdir, capsys)
    finally:
        logdir.chmod(0o755)
    assert str(logdir / "toy") in line and "Permission denied" in line
    assert list(logdir.iterdir()) == []


def test_a_name_too_long(tmp_path, capsys):
    logdir = tmp_path / "runs" / ("x" * 300)
    line = _run(logdir, capsys)
    assert "x" * 300 in line and "File name too long" in line
    assert list(tmp_path.iterdir()) == []  # the `runs` folder created on the way is removed again


def test_a_full_disk(tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write to a full disk raises

    monkeypatch.setattr(results.os, "fsync", full)
    line = _run(tmp_path / "runs", capsys)
    assert "config.yaml: No space left on device" in line and str(tmp_path / "runs") in line
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary file left behind


@pytest.mark.parametrize("debug", ["1"])
def test_bench_debug_shows_the_traceback(tmp_path, monkeypatch, debug):
    logdir = tmp_path / "runs"
    logdir.write_text("")
    monkeypatch.setenv("BENCH_DEBUG", debug)
    with pytest.raises(OSError):
        cli.main([*RUN, "--logdir", str(logdir)])
