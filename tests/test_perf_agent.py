"""`bench perf agent` times the runner's own compiled agent, one figure set per training stream."""

import json

import pytest

from bench import cli


def test_perf_agent_measures_every_stream_of_a_two_stream_agent(tmp_path):
    out = tmp_path / "perf.json"
    code = cli.main(["perf", "agent", "--agent", "tests.helpers:TWO_STREAMS", "--suite", "toy", "--task", "reach",
                     "--updates", "2", "--policy-steps", "5", "--matmul", "64", "--json", str(out)])  # fmt: skip
    assert code == 0
    figures = json.loads(out.read_text())
    assert sorted(figures["streams"]) == ["fast", "slow"]
    assert (figures["streams"]["fast"]["batch"], figures["streams"]["fast"]["length"]) == (2, 4)
    slow = figures["streams"]["slow"]
    assert (slow["batch"], slow["length"], slow["context"]) == (3, 6, 1)
    assert all(s["update_s_median"] > 0 and len(s["update_s_all"]) == 2 for s in figures["streams"].values())
    assert figures["policy_steps_per_s"] > 0
    from bench.perf_agent import peak_drift_lines, report_lines

    figures["matmul_peak_before_after_gflops"] = [262.0, 217.0]  # a host whose speed moved: the report says so
    assert peak_drift_lines([262.0, 217.0])[0] in report_lines(figures)


def test_imagination_cases_are_timed_and_compared_within_their_group():
    """The optional `imagination_benchmark` protocol: every case is run on its inputs, steps/s reported, and
    the first case of each "<group>/<variant>" group is compared with the group's other cases."""
    import argparse

    import jax.numpy as jnp

    from bench.api import ImaginationCase
    from bench.perf_agent import _measure_imagination

    class Imagines:
        def imagination_benchmark(self, batches):
            rows = batches["train"]["x"]
            return {
                "a/fast": ImaginationCase(lambda s, x, key: x * s, rows, steps=4 * rows.shape[0]),
                "a/slow": ImaginationCase(lambda s, x, key: jnp.linalg.matrix_power(x * s, 9), rows, steps=8),
                "b": ImaginationCase(lambda s, x, key: x + s, rows[:1], steps=1),
            }

    args = argparse.Namespace(imagination_batch=2, updates=2, seed=0)
    batches = {"train": {"x": jnp.eye(3)[None].repeat(5, 0)}}
    figures = _measure_imagination(Imagines(), jnp.float32(2.0), batches, args)
    assert sorted(figures) == ["a/fast", "a/slow", "b"]
    assert figures["a/fast"]["steps"] == 8  # the batch was cut to --imagination-batch rows
    assert len(figures["a/fast"]["call_s_all"]) == 2
    for f in figures.values():
        assert f["steps_per_s"] == f["steps"] / f["call_s_median"]
    ratio = figures["a/fast"]["steps_per_s"] / figures["a/slow"]["steps_per_s"]
    assert figures["a/fast"]["speedup_over"] == {"a/slow": ratio}
    assert figures["b"]["speedup_over"] == {} and "speedup_over" not in figures["a/slow"]
    assert _measure_imagination(object(), None, {}, args) == {}  # agents without the method: nothing


def test_profile_attributes_operations_to_pass_loop_and_primitive():
    """`--profile`: trace events are matched to the compiled module's instructions and grouped by their op_name."""
    import collections

    from bench import perf_profile

    hlo = "\n".join([
        '  %dot.1 = f32[8,4]{1,0} dot(%a, %b), metadata={op_name="jit(f)/transpose(jvp())/while/body/dot_general"}',
        '  %conv.2 = f32[2,8,8,3]{3,2,1,0} convolution(%x, %w), metadata={op_name="jit(f)/jvp()/conv_general_dilated"}',
        '  %add.3 = f32[8]{0} add(%p, %q), metadata={op_name="jit(f)/jvp()/while/body/add"}',
    ])  # fmt: skip
    metadata = perf_profile.instruction_metadata(hlo)
    assert metadata["conv.2"] == ("f32[2,8,8,3]{3,2,1,0}", "jit(f)/jvp()/conv_general_dilated")
    assert perf_profile.source_group(metadata["dot.1"][1]) == "backward, loop, dot_general"
    assert perf_profile.source_group(metadata["add.3"][1]) == "forward, loop, add"
    events = [("dot.1", 300), ("conv.2", 500), ("dot.1", 100), ("ThunkExecutor::Execute", 10_000), ("add.3", 100)]
    times = perf_profile.operation_times(events, metadata)
    assert times == collections.Counter({"dot.1": 400, "conv.2": 500, "add.3": 100})  # unknown events left out
    summary = perf_profile.summarise(times, metadata, repeats=2, top=2)
    assert summary["traced_ms_per_update"] == 1000 / 1e6 / 2
    assert [(g["group"], g["share"]) for g in summary["groups"]] == [
        ("forward, flat, conv_general_dilated", 0.5), ("backward, loop, dot_general", 0.4), ("forward, loop, add", 0.1)]
    assert [op["name"] for op in summary["operations"]] == ["conv.2", "dot.1"]


def test_profile_names_the_product_inside_a_fusion_with_another_root():
    """XLA's CPU backend fuses an MLP's matmuls into the reduction after them; the fusion's op_name is the
    reduction's, so `--profile` adds the product it contains (directly or in a computation it calls)."""
    from bench import perf_profile

    hlo = "\n".join([
        "%inner.1 (p: f32[8,4], q: f32[4,2]) -> f32[8,2] {",
        '  %dot.9 = f32[8,2]{1,0} dot(%p, %q), metadata={op_name="jit(f)/jvp()/dot_general"}',
        "}",
        "%fused_computation.2 (p: f32[8,4], q: f32[4,2]) -> f32[8] {",
        '  %call.1 = f32[8,2]{1,0} call(%p, %q), calls=%inner.1',
        '  %reduce.4 = f32[8]{0} reduce(%call.1), metadata={op_name="jit(f)/jvp()/reduce_sum"}',
        "}",
        "%fused_computation.3 (p: f32[8]) -> f32[8] {",
        '  %exp.1 = f32[8]{0} exponential(%p), metadata={op_name="jit(f)/jvp()/exp"}',
        "}",
        "ENTRY %main (a: f32[8,4], b: f32[4,2]) -> f32[8] {",
        '  %ynn_fusion.5 = f32[8]{0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.2, '
        'metadata={op_name="jit(f)/jvp()/reduce_sum"}',
        '  %exp_fusion.6 = f32[8]{0} fusion(%ynn_fusion.5), kind=kLoop, calls=%fused_computation.3, '
        'metadata={op_name="jit(f)/jvp()/exp"}',
        "}",
    ])  # fmt: skip
    metadata = perf_profile.instruction_metadata(hlo)
    assert perf_profile.source_group(metadata["ynn_fusion.5"][1]) == "forward, flat, reduce_sum (fused dot_general)"
    assert perf_profile.source_group(metadata["exp_fusion.6"][1]) == "forward, flat, exp"
    assert metadata["dot.9"] == ("f32[8,2]{1,0}", "jit(f)/jvp()/dot_general")


def test_perf_agent_profile_traces_every_stream(tmp_path):
    out = tmp_path / "perf.json"
    code = cli.main(["perf", "agent", "--agent", "tests.helpers:TWO_STREAMS", "--suite", "toy", "--task", "reach",
                     "--updates", "2", "--policy-steps", "2", "--matmul", "64", "--profile", "3", "--json", str(out)])  # fmt: skip
    assert code == 0
    for stream in json.loads(out.read_text())["streams"].values():
        profile = stream["profile"]
        assert profile["traced_ms_per_update"] > 0 and 0 < len(profile["operations"]) <= 3
        assert profile["operations_per_update"] >= len(profile["operations"])  # every operation run, counted
        assert abs(sum(g["share"] for g in profile["groups"]) - 1.0) < 1e-9


def test_perf_agent_times_the_vmapped_update_of_several_seeds(tmp_path):
    """`--vmap-seeds N`: each stream's update of N stacked seeds in one vmapped call, against one seed's."""
    out = tmp_path / "perf.json"
    code = cli.main(["perf", "agent", "--agent", "tests.helpers:TWO_STREAMS", "--suite", "toy", "--task", "reach",
                     "--updates", "2", "--policy-steps", "2", "--matmul", "64", "--vmap-seeds", "3",
                     "--timing-lock", str(tmp_path / "lock"), "--json", str(out)])  # fmt: skip
    assert code == 0
    for stream in json.loads(out.read_text())["streams"].values():
        vmap = stream["vmap"]
        assert vmap["seeds"] == 3 and len(vmap["update_s_all"]) == 2
        assert vmap["seed_updates_per_s"] == 3 / vmap["update_s_median"]
        assert vmap["speedup_over_one_seed"] == pytest.approx(vmap["seed_updates_per_s"] / stream["updates_per_s"])


def test_timing_waits_for_the_lock_held_by_another_perf_run(tmp_path):
    """`--timing-lock`: a timed section starts only once no other holder has the lock."""
    import argparse
    import fcntl
    import threading

    from bench.perf_agent import timing

    path = tmp_path / "lock"
    entered = threading.Event()

    def timed_section():
        with timing(argparse.Namespace(timing_lock=str(path))):
            entered.set()

    with open(path, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        thread = threading.Thread(target=timed_section)
        thread.start()
        assert not entered.wait(0.5)
        fcntl.flock(holder, fcntl.LOCK_UN)
    assert entered.wait(10)
    thread.join()
    with timing(argparse.Namespace(timing_lock=None)):  # no flag: no lock
        pass


def test_timed_sections_count_whether_another_perf_run_was_compiling(tmp_path):
    """`--timing-lock FILE`: a perf run holds FILE.host shared outside its timed sections (compiling, mostly);
    a timed section takes it exclusively when it can, which keeps new compiles from starting, and counts the
    sections that could not (another run compiling). A run's own share never blocks its own sections."""
    import argparse
    import fcntl

    from bench import perf_agent

    args = argparse.Namespace(timing_lock=str(tmp_path / "lock"))
    counts = dict(perf_agent.host_quiet)
    perf_agent.hold_host(args)
    try:
        with perf_agent.timing(args):  # alone: quiet, and the host is held against new compiles
            with open(tmp_path / "lock.host", "a") as newcomer:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(newcomer, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with open(tmp_path / "lock.host", "a") as compiling:  # another run, compiling
            fcntl.flock(compiling, fcntl.LOCK_SH)
            with perf_agent.timing(args):
                pass
        assert perf_agent.host_quiet["sections"] - counts["sections"] == 2
        assert perf_agent.host_quiet["quiet"] - counts["quiet"] == 1
        with open(tmp_path / "lock.host", "a") as other:  # the run's share is held again after its sections
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        perf_agent._host_shares.pop(args.timing_lock).close()


def test_a_peak_that_moved_during_the_run_is_reported():
    """The matmul peaks before and after the updates 262 and 217 GFLOP/s (a 2026-12-06 run): 17% apart, over
    the 10% bound, so the report says the host's speed changed; 262 and 240 (8%) pass without a line."""
    from bench.perf_agent import PEAK_DRIFT_WARNING, peak_drift_lines

    assert PEAK_DRIFT_WARNING == 0.10
    (line,) = peak_drift_lines([262.0, 217.0])
    assert "moved 17%" in line and "scripts/update_ab.py" in line
    assert peak_drift_lines([217.0, 262.0]) == [line]
    assert peak_drift_lines([262.0, 240.0]) == []
    assert peak_drift_lines([100.0, 90.0]) == []  # exactly 10%: within the bound
