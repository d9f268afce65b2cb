"""`bench perf agent` times the runner's own compiled agent, one figure set per training stream."""

import json

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
