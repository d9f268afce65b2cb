"""Run folders and their files. Everything is plain JSON/JSONL/YAML; writes are atomic.

A run folder is `ROOT/<suite>/<task>/<agent>/<config-hash>/seed<N>/` and holds:

* `config.yaml`    the resolved config (sections run, replay, logger, env, agent)
* `manifest.json`  see `new_manifest`: status ("running" | "stopped" (Ctrl-C; resumable) | "finished"), code version and dirty flag, package
                   versions, hardware, seed, config hash, protocol, budget, wall time, agent steps, env frames,
                   and `segments`: one entry per process that ran part of the run (started, ended, the step it
                   resumed from, its code, packages and hardware, its share of the wall time, and `vmap_seeds`
                   where it ran vmapped with other seeds)
* `code-<sha>.diff` the uncommitted changes of the checkout that ran the run or one of its segments, if
                   any (see `code_version`); the manifest's `code.diff` names it
* `metrics.jsonl`  one record per log interval: {"step": agent steps, "frames": env frames, <name>: float}
* `scores.jsonl`   one record per finished episode (schema `SCORE_FIELDS` below, plus the suite's extra score
                   fields such as `success` or `achievement_collect_wood`)
* `ckpt/`          the latest checkpoint (see bench.checkpoint); `media/` agent reports

Score record fields:
    step     int    agent steps taken by the run when the episode ended (all workers together)
    frames   int    env frames at that point (step * action repeat)
    mode     str    "train" (training episode) or "eval" (evaluation episode)
    eval_round int  index of the evaluation round ("eval" only; the final evaluation is the last round)
    final    bool   true for episodes of the final evaluation protocol
    worker   int    env worker index
    episode  int    episode index of that worker and mode
    return   float  undiscounted episode return
    length   int    agent steps in the episode
    broken   bool   true if the env worker crashed during the episode (return is partial: exclude it)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import hashlib
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from bench import allocator, compile_cache

SCORE_FIELDS = {
    "step": int,
    "frames": int,
    "mode": str,
    "worker": int,
    "episode": int,
    "return": float,
    "length": int,
    "broken": bool,
}
MANIFEST_FORMAT = 1
RUN_STATUSES = ("running", "stopped", "finished")  # "stopped": Ctrl-C, checkpoint saved, resumable
PACKAGES = (
    "jax", "jaxlib", "equinox", "optax", "numpy", "gymnasium", "ale-py", "crafter", "minihack", "nle",
    "dm-control", "mujoco", "pymunk", "pandas", "arch", "rliable", "wandb", "ray",
)  # fmt: skip


def default_root() -> Path:
    return Path(os.environ.get("BENCH_ROOT", "runs"))


def run_dir(root, suite: str, task: str, agent: str, config_hash: str, seed: int) -> Path:
    safe_agent = agent.replace(":", "_").replace("/", "_")
    return Path(root) / suite / task / safe_agent / config_hash / f"seed{seed}"


@contextlib.contextmanager
def no_new_empty_folders(folder):
    """Remove the folders on the way to `folder` that this block created, if it fails and leaves them empty
    (a run that cannot write leaves the results root as it found it)."""
    folder = Path(folder)
    # os.path.lexists and isdir answer False for a path the system cannot even look up (a name too long)
    new = [path for path in (folder, *folder.parents) if not os.path.lexists(path)]  # deepest first
    try:
        yield
    except BaseException:
        for path in new:
            try:
                path.rmdir()
            except OSError:  # never created (go on to its parent), or not empty: the run wrote something
                if os.path.isdir(path):
                    break
        raise


# ---------------------------------------------------------------------------------------- atomic files


def fsync_file(path) -> None:
    """Flush a written file's data to disk (a rename alone may reach the disk before the data)."""
    _fsync(path, os.O_RDONLY)


def fsync_dir(path) -> None:
    """Flush a folder's entries (creations, renames, deletions) to disk."""
    _fsync(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path, flags: int) -> None:
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename over the target, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a failed write names no file
            error.filename = str(path)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


class JsonlWriter:
    """Append-only JSON lines. `position()` is the byte offset a checkpoint records; on resume the file is
    truncated back to it, so records written after the checkpoint are rewritten exactly once. Records are
    flushed on every write and fsynced by `sync()` (checkpoints call it), not per record."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)

    def truncate(self, position: int) -> None:
        size = self.path.stat().st_size
        if position > size:
            raise ValueError(f"{self.path}: checkpoint expects {position} bytes but the file has only {size}")
        with open(self.path, "r+b") as file:
            file.truncate(position)

    def position(self) -> int:
        return self.path.stat().st_size

    def write(self, records: Iterable[Mapping]) -> None:
        lines = "".join(json.dumps(dict(r), sort_keys=True, allow_nan=True) + "\n" for r in records)
        if not lines:
            return
        with open(self.path, "a") as file:
            file.write(lines)

    def sync(self) -> None:
        with open(self.path, "a") as file:
            os.fsync(file.fileno())


def read_jsonl(path) -> list[dict]:
    """Read a JSONL file; a final line cut off by a crash is ignored, any other bad line is an error."""
    records = []
    lines = Path(path).read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        records.append(record)
    return records


# -------------------------------------------------------------------------------------------- manifest


DIFF_NAME = re.compile(r"code-[0-9a-f]{12}\.diff")  # code-<first 12 hex digits of the patch's sha256>.diff


def code_version(folder=None, checkout=None) -> dict:
    """Commit of the code checkout and whether it had uncommitted changes in tracked files.

    Given a run `folder`, a dirty checkout's changes (`git diff HEAD --binary`) are written there as
    `code-<sha256[:12]>.diff`, named under "diff": the code that ran is then the commit plus that patch
    (`git apply`). Untracked files are neither counted as changes nor recorded. `checkout` defaults to the
    checkout this package runs from."""
    here = Path(checkout) if checkout is not None else Path(__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(here), *args], capture_output=True, timeout=10, check=False
        )

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    code = {"commit": commit.stdout.decode().strip(), "dirty": bool(status.stdout.strip())}
    if code["dirty"] and folder is not None:
        try:
            diff = git("diff", "HEAD", "--binary", "--no-ext-diff", "--no-color")
        except (OSError, subprocess.SubprocessError):
            diff = None
        code["diff"] = None
        if diff is not None and diff.returncode == 0 and diff.stdout:
            code["diff"] = diff_name(diff.stdout)
            atomic_write_bytes(Path(folder) / code["diff"], diff.stdout)
    return code


def diff_name(patch: bytes) -> str:
    """The file name a run folder keeps a patch under: its content's sha256, so equal patches share a file."""
    return f"code-{hashlib.sha256(patch).hexdigest()[:12]}.diff"


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    import importlib.metadata

    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict:
    """The machine as it bears on the scores: on the CPU, XLA runs one thread per usable CPU (the process's
    affinity), and the thread count changes how its matrix products split their sums, so the same run gives
    other scores with another count (docs/reproducibility.md)."""
    info = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "host_allocator": allocator.current(),  # bears on speed only (bench/allocator.py)
        "compile_cache": compile_cache.current(),  # bears on compile time only (bench/compile_cache.py)
    }
    try:
        import jax

        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception as error:  # noqa: BLE001 - reporting hardware must never fail a run
        info["jax_backend"] = f"unavailable: {error}"
    return info


def xla_cpu_threads(hardware: dict):
    """XLA's CPU thread count as a manifest's `hardware` records it: `usable_cpus`, or for manifests written
    before that was recorded, `cpus` (the runs of those days used every CPU). Unchecked: None when absent."""
    return hardware.get("usable_cpus", hardware.get("cpus"))


def _cpu_model() -> str | None:
    """The CPU's model name and its widest vector extension (from /proc/cpuinfo on Linux; None elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    vector = next((name for name in ("avx512f", "avx2", "avx", "sse4_2") if name in flags), None)
    model = fields.get("model name")
    return f"{model} ({vector})" if model and vector else model


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_manifest(*, suite, task, agent, seed, config_hash, protocol, budget, command, folder=None) -> dict:
    """A fresh run's manifest; `folder`, the run's folder, receives the checkout's patch if it is dirty."""
    return {
        "format": MANIFEST_FORMAT,
        "status": "running",
        "suite": suite,
        "task": task,
        "agent": agent,
        "seed": seed,
        "config_hash": config_hash,
        "protocol": protocol,
        "budget": budget,
        "command": command,
        "code": code_version(folder),
        "packages": package_versions(),
        "hardware": hardware(),
        "created": now(),
        "updated": now(),
        "wall_time": 0.0,
        "agent_steps": 0,
        "env_frames": 0,
        "segments": [],
    }


def read_manifest(folder) -> dict:
    path = Path(folder) / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a bench manifest of format {MANIFEST_FORMAT}")
    return data


def is_finished(folder) -> bool:
    path = Path(folder) / "manifest.json"
    return path.exists() and read_manifest(folder).get("status") == "finished"
