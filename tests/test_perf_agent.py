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
