"""docs/add_your_agent.md: the example package installs, registers through its entry point, passes the
contract checks, runs through `bench run` and appears on the leaderboard."""

import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import pytest

from bench.contract import ContractError, check_agent
from tests.runs import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "example_agent"


def _run(*args, site, root):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(site)]), BENCH_ROOT=str(root))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_install_register_check_run_and_rank(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(FIXTURE, source)  # pip writes build metadata next to the sources; keep the repository clean
    site = tmp_path / "site"
    # Offline: the build backend (setuptools) comes from the machine's configured local package index.
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                              str(source)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    assert (site / "example_agent" / "__init__.py").exists()

    listed = _run("-m", "bench.cli", "list", "agents", site=site, root=tmp_path)
    assert "bandit" in listed.stdout and "Epsilon-greedy bandit" in listed.stdout, listed.stderr

    check = _run("-c", "from bench.contract import check_agent; print(check_agent('bandit'))", site=site, root=tmp_path)
    assert check.returncode == 0 and "value_max" in check.stdout, check.stderr[-2000:]

    runs = tmp_path / "runs"
    for agent in ("bandit", "random"):
        proc = _run("-m", "bench.cli", "run", "--agent", agent, "--suite", "toy", "--task", "reach", "--steps", "300",
                    "--run.train_fill", "64", "--run.eval_episodes", "3", "--logdir", str(runs), "--quiet",
                    site=site, root=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    manifests = [json.loads(p.read_text()) for p in runs.rglob("manifest.json")]
    bandit = next(m for m in manifests if m["agent"] == "bandit")
    assert bandit["status"] == "finished"
    metrics = (next(runs.rglob("bandit/*/seed0")) / "metrics.jsonl").read_text()
    assert "value_max" in metrics  # the agent was updated by the runner

    out = tmp_path / "board"
    board = _run("-m", "bench.cli", "leaderboard", "--suite", "toy", "--runs", str(runs), "--tasks", "reach",
                 "--any-budget", "--reps", "100", "--out", str(out), site=site, root=tmp_path)  # fmt: skip
    assert board.returncode == 0, board.stderr[-2000:]
    # the command says where the page and the plots are
    assert f"HTML page: {out / 'index.html'}" in board.stderr and f"{out / 'aggregates.png'}" in board.stderr
    table = (out / "leaderboard.md").read_text()
    assert f"bandit@{bandit['config_hash']}" in table and "random@" in table


@pytest.fixture
def example_module(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURE))
    import example_agent

    return example_agent


def test_contract_checks_catch_broken_agents(example_module, monkeypatch):
    assert "train" in check_agent("example_agent:SPEC")
    agent_cls = example_module.BanditAgent
    act, update = agent_cls.act, agent_cls.update

    def act_out_of_range(self, state, carry, obs, *, key, mode):
        carry, action, extras = act(self, state, carry, obs, key=key, mode=mode)
        return carry, {"action": action["action"] + self.actions}, extras

    monkeypatch.setattr(agent_cls, "act", act_out_of_range)
    with pytest.raises(ContractError, match="act: .*out of range"):
        check_agent("example_agent:SPEC")
    monkeypatch.setattr(agent_cls, "act", act)

    def update_nan(self, state, stream, batch, *, key):
        state, metrics, replay = update(self, state, stream, batch, key=key)
        return state, {**metrics, "loss": jnp.nan}, replay

    monkeypatch.setattr(agent_cls, "update", update_nan)
    with pytest.raises(ContractError, match="metric 'loss' is not a finite scalar"):
        check_agent("example_agent:SPEC")
