"""Several training streams: per-stream update counts follow their ratios; extra replay tables get their rows."""

import json

import pytest

from bench import runner


def test_two_streams_follow_their_ratios_start_steps_and_tables(tmp_path):
    overrides = {"run.steps": "1200", "run.envs": "2", "run.train_fill": "60", "run.log_every": "100",
                 "run.final_eval": "false"}  # fmt: skip
    folder = runner.run("tests.helpers:TWO_STREAMS", "toy", "reach", overrides=overrides, root=tmp_path, quiet=True)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "train/updates/fast" in r]
    # fast: batch 2 x length 4, ratio 16 -> 16 * 2 envs / 8 = 4 updates per policy step;
    # slow: batch 3 x length 6, ratio 9 -> 9 * 2 / 18 = 1 update per policy step, from agent step 300 on.
    checked = 0
    for before, after in zip(records, records[1:]):
        policy_steps = (after["replay/steps"] - before["replay/steps"]) // 2  # one main-table row per worker
        fast = after["train/updates/fast"] - before["train/updates/fast"]
        slow = after["train/updates/slow"] - before["train/updates/slow"]
        if before["train/updates/fast"] > 0:
            assert fast == 4 * policy_steps
        if before["train/updates/slow"] > 0:
            assert slow == policy_steps
            checked += 1
        if before["step"] < 300:
            assert before["train/updates/slow"] == 0  # not before its start step
    assert checked >= 5
    assert records[-1]["slow/odd_steps"] == 0  # the "pairs" table holds only the rows act marked for it
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["updates"] == records[-1]["train/updates/fast"] + records[-1]["train/updates/slow"]


def test_an_unknown_sampler_name_is_one_clear_error(tmp_path, monkeypatch):
    from tests import helpers

    monkeypatch.setattr(helpers.TwoStreamAgent, "streams", lambda self: {
        "fast": helpers.StreamSpec(2, 4, sampler="time_balance")})  # fmt: skip
    with pytest.raises(ValueError, match="unknown replay sampler 'time_balance'"):
        runner.run("tests.helpers:TWO_STREAMS", "toy", "reach", overrides={"run.steps": "10"}, root=tmp_path, quiet=True)
