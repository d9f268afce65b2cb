"""bench/compile_cache.py: where XLA's compiled programs are kept, and that a program read back from the cache
by another process computes what the freshly compiled one did."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from bench import compile_cache

# Compiles (or reads back) one program and reports the cache hits and the result. The cache's own settings
# come from the environment, as for `bench`; every program is cached, however fast it compiled.
PROGRAM = """
import json, os, sys
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
from bench import compile_cache
folder = compile_cache.enable()
import jax, jax.numpy as jnp
hits = compile_cache.hits()

def program(x):
    for _ in range(20):
        x = jnp.tanh(x @ x.T) + jnp.sin(x)
    return x.sum(0)

result = jax.jit(program)(jnp.arange(64.0).reshape(8, 8) / 64)
print(json.dumps({"folder": folder, "hits": compile_cache.hits() - hits, "result": result.tolist()}))
"""


def run_program(env: dict, stderr: list | None = None) -> dict:
    ours = ("JAX_COMPILATION_CACHE", "BENCH_COMPILE_CACHE")
    variables = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    done = subprocess.run([sys.executable, "-c", PROGRAM], env={**variables, **env}, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    if stderr is not None:
        stderr.append(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_the_program_the_first_compiled_and_gets_the_same_result(tmp_path):
    env = {"BENCH_COMPILE_CACHE": str(tmp_path / "cache")}
    first, second = run_program(env), run_program(env)
    folder = tmp_path / "cache" / compile_cache.host_key()
    assert first["folder"] == second["folder"] == str(folder)
    assert any(name.endswith("-cache") for name in os.listdir(folder)), "the first process wrote no program"
    assert first["hits"] == 0 and second["hits"] >= 1
    assert second["result"] == first["result"]


@pytest.mark.parametrize("setting", ["off", None])
def test_off_compiles_in_every_process_and_writes_nothing(tmp_path, setting):
    env = {"XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    if setting is not None:
        env["BENCH_COMPILE_CACHE"] = setting
    first, second = run_program(env), run_program(env)
    assert first["folder"] == second["folder"] == "off"
    assert first["hits"] == second["hits"] == 0
    assert not list(tmp_path.iterdir())


def test_a_folder_that_cannot_be_made_turns_the_cache_off_with_one_line_naming_it(tmp_path):
    in_the_way = tmp_path / "a file"
    in_the_way.write_text("")
    stderr = []
    report = run_program({"BENCH_COMPILE_CACHE": str(in_the_way / "cache")}, stderr)
    assert report["folder"] == "off" and report["hits"] == 0
    lines = [line for line in stderr[0].splitlines() if "cache" in line.lower()]
    assert len(lines) == 1, stderr[0]
    assert lines[0].startswith("bench: warning: compile cache ") and str(in_the_way) in lines[0]


@pytest.mark.parametrize("value", [None, "off", "OFF", "0", "false", "none", ""])
def test_the_cache_is_off_unless_turned_on(monkeypatch, value):
    """Opt-in: reading compiled CPU programs back has crashed (bench/compile_cache.py)."""
    if value is None:
        monkeypatch.delenv("BENCH_COMPILE_CACHE", raising=False)
    else:
        monkeypatch.setenv("BENCH_COMPILE_CACHE", value)
    assert compile_cache.directory() is None


def test_the_folder_is_per_host_type_under_the_chosen_or_the_user_cache(monkeypatch, tmp_path):
    key = compile_cache.host_key()
    assert len(key) == 12 and int(key, 16) >= 0 and key == compile_cache.host_key()
    monkeypatch.setenv("BENCH_COMPILE_CACHE", str(tmp_path / "mine"))
    assert compile_cache.directory() == tmp_path / "mine" / key
    monkeypatch.setenv("BENCH_COMPILE_CACHE", "on")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.directory() == tmp_path / "xdg" / "mbrl-bench" / "xla" / key


def test_host_types_with_other_instruction_sets_get_other_folders(monkeypatch):
    """A home folder shared by a cluster's machines must not hand one CPU's programs to another."""
    import builtins
    import io

    real_open = builtins.open

    def cpuinfo(flags: str):
        def fake_open(path, *args, **kwargs):
            if path == "/proc/cpuinfo":
                return io.StringIO(f"model name\t: Some CPU\nflags\t\t: {flags}\n")
            return real_open(path, *args, **kwargs)

        return fake_open

    monkeypatch.setattr(builtins, "open", cpuinfo("fpu sse2 avx2 avx512f"))
    with_avx512 = compile_cache.host_key()
    monkeypatch.setattr(builtins, "open", cpuinfo("fpu sse2 avx2"))
    without = compile_cache.host_key()
    assert without != with_avx512
    monkeypatch.setattr(builtins, "open", cpuinfo("avx2 sse2 fpu"))  # the same set, in another order
    assert compile_cache.host_key() == without


# Runs the runner's compiled act, update and report of one agent for seed 0, then for seed 1, with the cache
# in the folder given, and reports the programs written and read back after each seed.
SEEDS = """
import json, os, sys
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
from bench import compile_cache
folder = compile_cache.enable()
import jax, numpy as np
from bench import runner
from bench.perf_agent import _obs_batch, _synthetic_batch
from tasks import toy
from tests.helpers import TinyAgent, TinyConfig

env = toy.make_env("reach", toy.ToyProtocol())
agent = TinyAgent(TinyConfig(), dict(env.obs_space), dict(env.act_space))
rng = np.random.default_rng(0)
after = []
for seed in (0, 1):
    key = jax.random.PRNGKey(seed)
    one = runner.CompiledAgent(agent, key)
    one.set_state(agent.init(key=jax.random.fold_in(key, runner.KEY_INIT)))
    obs = _obs_batch(agent.obs_space, 2, rng)
    _, _, extras = one.act(one.initial_carry(2), obs, (np.int32(0),), runner.KEY_ACT, "train")
    for name, stream in agent.streams().items():
        batch = _synthetic_batch(agent.obs_space, agent.act_space, jax.device_get(extras), stream, rng)
        jax.block_until_ready(one.update(name, batch, np.int32(1)))
        jax.block_until_ready(one.report(batch, np.int32(1)))
    written = sorted(name for name in os.listdir(folder) if name.endswith("-cache"))
    after.append({"written": written, "hits": compile_cache.hits()})
print(json.dumps(after))
"""


def test_every_seed_runs_the_same_programs_so_a_sweep_compiles_each_once(tmp_path):
    """The runner's programs take the run's base key as an argument: a constant key made every seed's act a
    program of its own, and a sweep's seeds missed the cache."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env = {**variables, "BENCH_COMPILE_CACHE": str(tmp_path)}  # turned on for this test
    done = subprocess.run([sys.executable, "-c", SEEDS], env=env, capture_output=True, text=True, timeout=300,
                          check=True, cwd=pathlib.Path(__file__).resolve().parents[1])  # fmt: skip
    seed_0, seed_1 = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(seed_0["written"]) >= 3, seed_0  # act, update, report (and the state check)
    assert seed_1["written"] == seed_0["written"], "seed 1 compiled programs of its own"
    assert seed_1["hits"] - seed_0["hits"] >= 3
