"""Helpers to run the `bench` CLI in a subprocess and inspect run folders."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(*args, root, check=True, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, BENCH_ROOT=str(root), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"bench {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def bench_popen(*args, root, own_group=False) -> subprocess.Popen:
    """Start `bench ARGS` in the background; `own_group` puts it in a new process group (like a terminal job)."""
    env = dict(os.environ, BENCH_ROOT=str(root), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=own_group)  # fmt: skip


def wait_for_checkpoint(proc: subprocess.Popen, root, timeout=300.0) -> Path:
    """Wait until the background run `proc` has saved a checkpoint under `root`, and return its run folder (the
    one holding that checkpoint and a manifest; the runner writes the manifest first, since a CI run found a
    step-0 checkpoint with no manifest beside it). Fails with the run's stderr if it ends first or saves none
    within `timeout` seconds (a CI host with two busy cores can be slow to start one)."""
    deadline = time.monotonic() + timeout
    while True:
        folders = [p.parent.parent for p in Path(root).rglob("ckpt/LATEST")]
        if folders and (folders[0] / "manifest.json").is_file():
            return folders[0]
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before its first checkpoint:\n"
                                 f"{proc.stderr.read()[-3000:] if proc.stderr else ''}")  # fmt: skip
        if time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            files = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))[:20]
            raise AssertionError(f"no checkpoint after {timeout:.0f} s; files {files}; stderr:\n{(err or '')[-3000:]}")
        time.sleep(0.05)


def only_run_dir(root) -> Path:
    folders = [p.parent for p in Path(root).rglob("manifest.json")]
    assert len(folders) == 1, folders
    return folders[0]


def final_agent_bytes(folder: Path) -> bytes:
    header = json.loads((folder / "ckpt" / (folder / "ckpt" / "LATEST").read_text().strip()).read_text())
    name = next(n for n in header["files"] if n.startswith("agent-"))
    return (folder / "ckpt" / name).read_bytes()


def tree_digest(root) -> dict[str, str]:
    """sha256 of every file under root, except run-folder locks (`.lock` names the process holding the folder)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name != ".lock"}  # fmt: skip
