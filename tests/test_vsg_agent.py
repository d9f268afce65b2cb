"""VSG and SVSG agents: registration, presets, one compiled update (traces once) with every loss term and the
gate-open rate, refreshed replay latents, and the open-loop report."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses

import equinox as eqx
import jax
import numpy as np
import pytest

from agents.vsg import SVSG_SPEC, VSG_SPEC, GatedRSSM, StochasticGatedSSM, SVSGConfig, VSGConfig
from bench import config as config_lib
from bench import registry
from tasks import toy

SPECS = {"vsg": VSG_SPEC, "svsg": SVSG_SPEC}
SIZES = ("size1m", "size12m", "size25m", "size50m", "size100m", "size200m", "size400m")


def test_registered_under_their_names():
    assert registry.get_agent("vsg") is VSG_SPEC
    assert registry.get_agent("svsg") is SVSG_SPEC


def test_gate_settings_are_config_with_the_paper_defaults():
    for config in (VSGConfig(), SVSGConfig()):
        assert config.rssm.gate_prior == 0.4 and config.rssm.gate_free == 0.1
        assert config.loss_scales.gate == 0.1
    config = registry.build_config(VSG_SPEC, toy.SUITE, ["debug"], {"rssm.gate_prior": "0.3", "loss_scales.gate": "1"})
    assert config.agent.rssm.gate_prior == 0.3 and config.agent.loss_scales.gate == 1.0
    with pytest.raises(config_lib.ConfigError, match="gate_prior"):
        registry.build_config(VSG_SPEC, toy.SUITE, ["debug"], {"rssm.gate_prio": "0.3"})


def test_size_presets_follow_dreamerv3():
    dreamer = registry.agent_presets(registry.get_agent("dreamerv3"))
    flat = config_lib._flatten
    for name, spec in SPECS.items():
        ours = registry.agent_presets(spec)
        for size in SIZES + ("debug", "dmc_proprio"):
            mine, theirs = flat(ours[size]), flat(dreamer[size])
            shared = {k: v for k, v in theirs.items() if not k.startswith("rssm.")}
            assert {k: mine.get(k) for k in shared} == shared, (name, size)
            if name == "vsg":
                for key in ("rssm.deter", "rssm.hidden", "rssm.classes"):
                    assert mine.get(key) == theirs.get(key), (size, key)
            elif size != "debug":  # SVSG's Gaussian state is as wide as DreamerV3's deterministic state
                assert mine.get("rssm.stoch") == theirs.get("rssm.deter"), size
                assert mine.get("rssm.hidden") == theirs.get("rssm.hidden"), size


@pytest.mark.parametrize("suite", ["bbs", "dmc_vision"])
def test_published_suites_use_the_paper_dynamics(suite):
    spec = registry.get_suite(suite)
    task = spec.tasks[0]
    vsg = registry.build_config(VSG_SPEC, spec, (), None, task).agent.rssm
    assert (vsg.deter, vsg.hidden, vsg.stoch, vsg.classes, vsg.blocks) == (1024, 1024, 32, 32, 1)
    svsg = registry.build_config(SVSG_SPEC, spec, (), None, task).agent.rssm
    assert (svsg.stoch, svsg.hidden, svsg.blocks) == (1024, 1024, 1)


def test_every_preset_builds_a_config():
    for spec in SPECS.values():
        for name in registry.agent_presets(spec):
            registry.build_config(spec, toy.SUITE, [name])


def test_wrong_config_type_is_an_error():
    env = toy.make_env("reach", toy.ToyProtocol())
    with pytest.raises(TypeError, match="VSGConfig"):
        VSG_SPEC.make(SVSGConfig(), env.obs_space, env.act_space)
    with pytest.raises(TypeError, match="SVSGConfig"):
        SVSG_SPEC.make(VSGConfig(), env.obs_space, env.act_space)


def toy_batch(env, batch_size: int, length: int, seed: int = 0) -> dict:
    """Random-policy sequences from a toy env, shaped like the runner's batches."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(batch_size):
        steps, obs = [], env.reset(seed=seed * 100 + b)
        while len(steps) < length:
            action = {"action": env.act_space["action"].sample(rng)}
            steps.append({**obs, **action})
            obs = env.step(action) if not obs["is_last"] else env.reset(seed=int(rng.integers(1 << 30)))
        rows.append(steps)
    return {k: np.stack([np.stack([np.asarray(s[k]) for s in row]) for row in rows]) for k in rows[0][0]}


@pytest.fixture(scope="module", params=["vsg", "svsg"])
def compiled(request):
    spec = SPECS[request.param]
    task = "reach" if request.param == "vsg" else "point"  # discrete and continuous actions
    config = registry.build_config(spec, toy.SUITE, ["debug"], task=task)
    env = toy.make_env(task, config.env)
    agent = spec.make(config.agent, env.obs_space, env.act_space)
    state = agent.init(key=jax.random.key(0))
    obs = {k: np.asarray(v)[None] for k, v in env.reset(seed=0).items()}
    _, _, extras = eqx.filter_jit(agent.act)(state, agent.initial_carry(state, 1), obs, key=jax.random.key(1), mode="train")
    stream = agent.streams()["train"]
    batch = toy_batch(env, stream.batch, stream.total_length)
    for name, value in extras.items():
        batch[name] = np.zeros((stream.batch, stream.total_length, *value.shape[1:]), value.dtype)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def update(state, batch, key):
        return agent.update(state, "train", batch, key=key)

    return request.param, agent, state, batch, update


def gate_metric(metrics: dict, name: str) -> float:
    # The gated dynamics name their metrics "dyn/gate/...".
    (value,) = [v for k, v in metrics.items() if k.endswith(f"gate/{name}")]
    return float(value)


@pytest.mark.slow  # the default run covers this through tests/test_agent_contract.py
def test_update_traces_once_and_logs_every_term(compiled):
    name, agent, state, batch, update = compiled
    dynamics_type = GatedRSSM if name == "vsg" else StochasticGatedSSM
    assert isinstance(state.nets.dynamics, dynamics_type)
    before = state.nets.dynamics.cell.parts.weight
    for step in range(3):
        state, metrics, replay_updates = update(state, batch, jax.random.key(10 + step))
    metrics = {k: float(v) for k, v in metrics.items()}
    assert all(np.isfinite(v) for v in metrics.values())
    scales = dataclasses.asdict(agent.config.loss_scales)
    assert {k.removeprefix("loss/") for k in metrics if k.startswith("loss/") and k != "loss/total"} == set(scales)
    assert "gate" in scales
    assert 0.0 < gate_metric(metrics, "open_rate") < 1.0
    # the gate KL term is the paper's batch quantity (>= its free bits) and enters the total with scale 0.1
    assert metrics["loss/gate"] >= agent.config.rssm.gate_free
    for key, value in replay_updates.items():
        assert value.shape == batch[key].shape
    # the gated cell trains (the gate parameters receive gradients through the straight-through sample)
    assert float(abs(state.nets.dynamics.cell.parts.weight - before).max()) > 0.0


def test_report_gives_the_open_loop_video_and_gate_rate(compiled):
    _, agent, state, batch, _ = compiled
    report = eqx.filter_jit(agent.report)(state, batch, key=jax.random.key(5))
    video = np.asarray(report["openloop"])
    assert video.dtype == np.uint8 and video.ndim == 4 and video.shape[-1] == 3
    assert video.shape[0] == batch["image"].shape[1] - agent.config.replay_context
    assert np.isfinite(float(report["openloop_mse"]))
    assert 0.0 < gate_metric(report, "open_rate") < 1.0
