"""The host memory allocator the `bench` command runs under: TCMalloc where it is installed, glibc's malloc
otherwise.

XLA's CPU runtime allocates each call's temporaries (1.2 GB for a `size1m` DreamerV3 update, 4.3 GB at
`size12m`) and frees them when the call returns. glibc's malloc serves such large blocks with mmap and returns
them with munmap, so every update touches all its temporary memory as fresh pages: measured, 343,000 minor page
faults and about 1 s of kernel time per `size1m` update (docs/cpu_runs.md). Telling glibc to keep freed memory
(one arena, no mmap, no trimming) removes the faults but serialises XLA's threads on the one arena's lock
(a `debug` update 35% slower). TCMalloc keeps freed memory in per-thread and central caches and has neither
problem: DreamerV3 updates run 1.4x faster under it at `size1m` and `size12m`.

An allocator can only be chosen when the process starts, so `bench`'s console script (`bench.cli.entry`)
starts itself again as `python -P -m bench.cli ...` (which calls `main` and never restarts) with TCMalloc in
LD_PRELOAD, when the library is found (Debian/Ubuntu: `apt install libtcmalloc-minimal4`) and not yet loaded.
The processes it starts (sweep runs, env workers) inherit it. `BENCH_ALLOCATOR=system` keeps glibc's malloc.
`bench.cli.main` called from Python never restarts the process. The allocator bears on speed only, never on
results; manifests and `bench perf agent` record it.
"""

from __future__ import annotations

import ctypes.util
import os
import platform
import sys

CHOICE_ENV = "BENCH_ALLOCATOR"  # "tcmalloc" (the default: used where installed) or "system"
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")


def tcmalloc_library() -> str | None:
    """The file name the dynamic loader knows TCMalloc by on this machine (e.g. libtcmalloc_minimal.so.4)."""
    for name in TCMALLOC_NAMES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def current() -> str:
    """The allocator this process runs under: 'tcmalloc' or 'system'."""
    try:
        with open("/proc/self/maps") as maps:
            return "tcmalloc" if any("libtcmalloc" in line for line in maps) else "system"
    except OSError:  # not Linux
        return "system"


def environment(env: dict[str, str]) -> dict[str, str]:
    """`env` with TCMalloc added to LD_PRELOAD where it is wanted (BENCH_ALLOCATOR), on Linux, installed on this
    machine and not there yet: the environment to start a `bench` process in (a sweep's runs get it from here,
    on whichever node of a Ray cluster they run)."""
    choice = env.get(CHOICE_ENV, "tcmalloc")
    if choice not in ("tcmalloc", "system"):
        raise ValueError(f"{CHOICE_ENV}={choice!r}: expected 'tcmalloc' or 'system'")
    preload = env.get("LD_PRELOAD", "")
    if choice == "system" or platform.system() != "Linux" or "libtcmalloc" in preload:
        return env
    library = tcmalloc_library()
    if library is None:
        return env
    # TCMalloc's default release rate hands some freed pages back now and then (a few updates fault again);
    # TCMALLOC_RELEASE_RATE=0 would stop that but doubled a size12m update's peak RSS (5.5 -> 10.7 GB)
    return {**env, "LD_PRELOAD": f"{library} {preload}".strip()}


def restart_under_tcmalloc(argv: list[str]) -> None:
    """Replace this process by `python -P -m bench.cli ARGV` under TCMalloc, where that is wanted and possible and
    it is not loaded yet; otherwise return and let the process go on. The pid stays (a sweep's run keeps its
    parent). A bad BENCH_ALLOCATOR ends the process with one line."""
    try:
        env = environment(dict(os.environ))
    except ValueError as error:
        sys.exit(f"bench: error: {error}")
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD") or current() == "tcmalloc":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-P", "-m", "bench.cli", *argv], env)
