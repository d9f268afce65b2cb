"""The `bench` command runs under TCMalloc where it is installed (bench/allocator.py): XLA's CPU temporaries are
then reused from call to call instead of being page-faulted in anew. CI installs the library (.ci/run)."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bench import allocator

# On Linux the library is part of the set-up (README; .ci/run installs it): its absence fails these tests.
needs_tcmalloc = pytest.mark.skipif(platform.system() != "Linux", reason="TCMalloc is preloaded on Linux only")


def _require_tcmalloc() -> None:
    assert allocator.tcmalloc_library() is not None, "TCMalloc is not installed: apt install libtcmalloc-minimal4"
BENCH = str(Path(sys.executable).parent / "bench")  # the console script, as a user runs it


def _bench(args, tmp_path, **env):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "BENCH_ROOT": str(tmp_path / "runs"), **env}
    env.pop("LD_PRELOAD", None)
    return subprocess.run([BENCH, *args], env=env, capture_output=True, text=True, timeout=300)


def _manifest_allocator(tmp_path, **env) -> str:
    done = _bench(["run", "--agent", "random", "--suite", "toy", "--task", "reach", "--steps", "40",
                   "--run.eval_episodes", "1", "--quiet"], tmp_path, **env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [manifest] = (tmp_path / "runs").rglob("manifest.json")
    return json.loads(manifest.read_text())["hardware"]["host_allocator"]


@needs_tcmalloc
def test_the_bench_command_restarts_itself_under_tcmalloc_and_the_manifest_says_so(tmp_path):
    _require_tcmalloc()
    assert _manifest_allocator(tmp_path / "default") == "tcmalloc"
    assert _manifest_allocator(tmp_path / "system", BENCH_ALLOCATOR="system") == "system"


def test_an_unknown_allocator_name_is_one_clear_line(tmp_path):
    done = _bench(["list", "suites"], tmp_path, BENCH_ALLOCATOR="jemalloc")
    assert done.returncode != 0
    assert done.stderr.strip() == "bench: error: BENCH_ALLOCATOR='jemalloc': expected 'tcmalloc' or 'system'"


# A jitted function whose 256 MiB temporary XLA allocates and frees on every call (64 Ki pages of 4 KiB): the
# median minor page faults of 8 calls once warm (TCMalloc hands some memory back now and then: a call faults).
FAULTS = """
import json, resource, statistics
import jax, jax.numpy as jnp

@jax.jit
def call(x):
    y = jnp.sin(x)[:, None] * jnp.cos(x)[None, :]  # 8192 x 8192 float32, materialised for the product
    return y @ x

x = jnp.linspace(0.0, 1.0, 8192)
for _ in range(3):
    call(x).block_until_ready()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    call(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(statistics.median(faults)))
"""


def _faults_per_call(choice: str) -> float:
    """In the environment a `bench` process gets (bench.allocator.environment) for BENCH_ALLOCATOR=`choice`."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "BENCH_ALLOCATOR": choice, "XLA_FLAGS": ""}  # XLA's defaults
    env.pop("LD_PRELOAD", None)
    env = allocator.environment(env)
    done = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_tcmalloc
def test_under_tcmalloc_xla_reuses_its_temporaries_instead_of_faulting_them_in_on_every_call():
    _require_tcmalloc()
    pages = 256 * 2**20 // 4096
    assert _faults_per_call("system") > pages / 2  # glibc: the temporary is mmapped afresh on every call
    assert _faults_per_call("tcmalloc") < pages / 20  # TCMalloc: reused
