"""XLA's compiled programs kept on disk and shared between processes (JAX's persistent compilation cache).

The seeds of a sweep compile the same update, act and evaluation programs (the seed is data, not part of the
program), and so do a resumed run and a repeated `bench perf`. Compiling is minutes at the larger sizes (a
`size12m` DreamerV3 update: 120-140 s on an H200, docs/gpu_check.md) and 17 s for a `debug` update on 2 CPU
cores; with the cache, each program is compiled once per machine type and read back after that (a `debug`
update: 17.2 s to compile, 2.0 s to trace and read back; 4 seeds of a short `debug` run, 2 at a time: 131.6 s
without the cache, 96.5 s from an empty one). A program read back is the one XLA compiled, so results are the
same with the cache as without (docs/reproducibility.md).

The cache is off unless `$BENCH_COMPILE_CACHE` turns it on: `on` (in `$XDG_CACHE_HOME/mbrl-bench/xla` or
`~/.cache/mbrl-bench/xla`) or a folder. JAX has an open report of segfaults in deserialised CPU executables
(jax-ml/jax#28908), and on 2026-12-04 one CI run of this project's tests with the cache on lost a test worker
to a segfault in the C++ unwinder (libgcc_s). Two later runs without the cache crashed in a compile near the
end too: the test workers had reached Linux's limit on memory mappings (fixed in tests/conftest.py). Since
that fix the whole test suite has passed twice with the cache on (2026-12-05, 897 tests each): from an empty
cache, and again from the 35 programs the first run left, 27 of which the second read back. It stays
opt-in all the same: what it saves is the compile time, minutes per run against the hours an Atari100k run
trains, while a crash in reading a program back would recur on every start until the cache is turned off.
It pays most where compiling is most of the work: a sweep's many short runs, repeated `bench perf`. On GPUs,
where compiling takes longest, JAX's cache is in wide use; it has not been measured here yet. When on, `bench`
sets it up when it starts (`bench.cli.main` calls `enable`), through JAX's environment variables, so the
processes it starts (a sweep's runs) share it:

* where: inside the folder, one folder per host type (`host_key`: CPU model and instruction set,
  OS and machine), because XLA's key for a CPU program does not say which instruction set it was compiled
  for, and a home folder shared between machines (a cluster's NFS home) must not hand one machine's programs
  to another;
* what: programs that took at least `MIN_COMPILE_S` to compile; the folder is kept under `MAX_BYTES`, the
  least recently used programs dropped first (JAX then takes a file lock around every read and write, so
  concurrent processes never read a half-written entry);
* a JAX setting the caller made (`JAX_COMPILATION_CACHE_DIR`, ...) is left as it is.

A folder that cannot be created or written to turns the cache off with one line on stderr naming it; an entry
that cannot be read back costs compile time only (JAX warns and compiles).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import sys

LOCATION_ENV = "BENCH_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "none", "")
MIN_COMPILE_S = 1.0
MAX_BYTES = 8 * 2**30

# JAX's settings: environment variable (read when JAX is imported) -> (option name, value type).
_JAX_SETTINGS = {
    "JAX_COMPILATION_CACHE_DIR": ("jax_compilation_cache_dir", str),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": ("jax_persistent_cache_min_compile_time_secs", float),
    "JAX_COMPILATION_CACHE_MAX_SIZE": ("jax_compilation_cache_max_size", int),
}


def host_key() -> str:
    """12 hex digits naming this host's type: OS, machine, CPU model and CPU feature flags."""
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and not model:
                    model = value.strip()
                elif name.strip() in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:  # not Linux: the processor name and platform stand for the host type
        pass
    text = "\n".join([platform.system(), platform.machine(), model, flags])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def directory() -> pathlib.Path | None:
    """The cache folder for this host type, or None when the cache is off (`$BENCH_COMPILE_CACHE` unset, or
    one of OFF)."""
    chosen = os.environ.get(LOCATION_ENV, "off").strip()
    if chosen.lower() in OFF:
        return None
    if chosen.lower() == "on":
        cache_home = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
        return pathlib.Path(cache_home) / "mbrl-bench" / "xla" / host_key()
    return pathlib.Path(chosen).expanduser() / host_key()


def enable() -> str:
    """Point JAX (of this process and the ones it starts) at the cache; returns what `current` returns."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        folder = directory()
        if folder is None:
            return current()
        problem = _unusable(folder)
        if problem:
            print(f"bench: warning: compile cache {folder}: {problem}; compiling without it "
                  f"(set {LOCATION_ENV} to another folder, or unset it)", file=sys.stderr)  # fmt: skip
            return current()
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_COMPILE_S))
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(MAX_BYTES))
    if "jax" in sys.modules:  # imported already: JAX has read its environment, so set its options too
        import jax

        for variable, (option, kind) in _JAX_SETTINGS.items():
            jax.config.update(option, kind(os.environ[variable]))
    return current()


def _unusable(folder: pathlib.Path) -> str | None:
    """Why `folder` cannot hold the cache (it cannot be made, or written to), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return error.strerror or str(error)
    return None if os.access(folder, os.W_OK | os.X_OK) else "not writable"


def current() -> str:
    """The cache folder JAX uses in this process (its environment), or "off"."""
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or "off"


_hit_count = 0
_listening = False


def _count(event: str, **_) -> None:
    global _hit_count
    if event == "/jax/compilation_cache/cache_hits":
        _hit_count += 1


def hits() -> int:
    """Programs this process has read from the cache so far (counted from the first call on; JAX reports them
    through `jax.monitoring`)."""
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_listener(_count)
        _listening = True
    return _hit_count
