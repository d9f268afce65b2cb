"""Test session settings.

* Strict dtype promotion, so a silent float16/float32/int mix in agent code fails a test (Equinox's own tests
  do the same). Agents cast explicitly where they mix dtypes.
* Two XLA settings that make compiling cheaper, for this process and the `bench` processes the tests start.
  The tests' programs are tiny and each is compiled once, so compiling is most of their time.
  - Backend optimisation level 0 (LLVM without its costly passes): on 2 idle cores, test_hieros_agent.py and
    test_iris_agent.py took 153 s at XLA's default level and 108 s at level 0, with the same tests passing.
  - XLA's older elemental emitters for fused element-wise code, instead of its fusion emitters
    (`xla_cpu_use_fusion_emitters=false`): on 2 idle cores, compiling the DreamerV3 update of
    tests/test_batch_shards.py took 7.7 s with them and 3.5 s without, THICK's 14.0 s and 6.9 s, and the whole
    default test run (the README's command) 1189 s and 797 s (2026-12-06), with the same 968 tests passing.
  Both change how XLA generates code, not what the programs compute; the training runs, `bench perf` and the
  published results use XLA's defaults. `XLA_FLAGS` set by the caller is kept, and a setting given there wins.
  They do change the rounding, and a learning test's outcome can move with it: tests/test_dreamerv3_learning.py::
  test_learns_reach, 13.74 against a bar of 13.55 at level 0 alone, gave 13.48 against 13.59 with the older
  emitters too (2026-12-06). So the older emitters are for the default run only (`pytest_configure` below), and
  `pytest -m slow` compiles at level 0 alone, as the slow tests' bars were measured.
* Two CPU devices, so that tests/test_batch_shards.py can split updates over them in this process. Every
  other program runs on the first, as with one.
* JAX's caches are cleared after each test module. Every compiled CPU program keeps its own memory mappings
  while JAX caches it, and a test worker compiles thousands: test_agent_contract.py alone leaves 31,000
  mappings. Kept for the whole run, a worker held 23,000 after 3 minutes, and near the end XLA segfaulted in a
  compile (two fresh-clone CI runs on 2026-12-05, in test_dreamerv3_learning.py::test_smoke_run_through_the_
  runner), as a process does when it reaches Linux's limit of 65,530 (vm.max_map_count). Clearing them brings
  a worker back to about 600 mappings.
"""

import gc
import os


def add_xla_flag(flag: str, value: str) -> None:
    """Add `--flag=value` to `XLA_FLAGS` unless the caller set that flag."""
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{flag}={value}".strip()


add_xla_flag("xla_backend_optimization_level", "0")

import jax  # noqa: E402  (XLA reads XLA_FLAGS when its backend starts, after this)
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_num_cpu_devices", 2)  # for the batch-shard tests (tests/test_batch_shards.py)


def pytest_configure(config):
    """The older element-wise emitters for the default run only (`-m 'not slow'`, pyproject.toml): the slow
    learning tests keep the settings their bars were measured with. Set here, before any test module is imported
    and so before XLA's backend starts; the test workers and the `bench` processes inherit it."""
    if config.option.markexpr == "not slow":
        add_xla_flag("xla_cpu_use_fusion_emitters", "false")


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Drop the module's compiled programs (and their memory mappings) when it is done."""
    yield
    jax.clear_caches()
    gc.collect()
