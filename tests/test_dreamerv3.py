"""DreamerV3 agent contract: init/act/update/report, trace-once update, save/load round trip, input checks."""

from __future__ import annotations

import dataclasses
import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.dreamerv3 import SPEC, DreamerV3Config
from agents.dreamerv3.agent import LATENT_PREFIX
from bench import config as config_lib
from bench import registry, spaces


def tiny_config(**changes) -> DreamerV3Config:
    """The `debug` preset, shrunk further so every test compiles quickly."""
    config = config_lib.Config(
        run=config_lib.RunConfig(), replay=config_lib.ReplayConfig(), logger=config_lib.LoggerConfig(),
        env=config_lib.RunConfig(), agent=DreamerV3Config(),
    )  # fmt: skip
    preset = registry.agent_presets(SPEC)["debug"]
    config = config_lib.apply(config, {k: v for k, v in preset.items() if k not in ("run", "replay")})
    config = config_lib.apply(config, {"batch_size": 2, "batch_length": 6, "imagination.horizon": 3, **changes})
    return config.agent


IMAGE_VECTOR_OBS = {
    "image": spaces.image(16, 16),
    "vector": spaces.box((3,), -10.0, 10.0),
    "priv_goal": spaces.box((2,)),  # private: the agent must never need it
    **spaces.step_spaces(),
}
# One discrete and one continuous action key, so a single compilation covers both policy heads.
MIXED_ACT = {"action": spaces.discrete(4), "move": spaces.box((2,), -2.0, 2.0)}
DISCRETE_ACT = {"action": spaces.discrete(4)}


def make_batch(agent, rng: np.random.Generator, length: int | None = None) -> dict:
    spec = agent.streams()["train"]
    carry = eqx.filter_eval_shape(lambda: agent.initial_carry(agent.init(key=jax.random.key(0)), 1))
    b, t = spec.batch, length or spec.total_length
    batch = {}
    for key in spaces.sensor_keys(agent.obs_space):
        batch[key] = np.stack([agent.obs_space[key].sample(rng, (t,)) for _ in range(b)])
    batch["reward"] = rng.normal(size=(b, t)).astype(np.float32)
    batch["is_first"] = rng.uniform(size=(b, t)) < 0.1
    batch["is_last"] = np.roll(batch["is_first"], -1, axis=1)
    batch["is_terminal"] = batch["is_last"] & (rng.uniform(size=(b, t)) < 0.5)
    for key, space in agent.act_space.items():
        batch[key] = space.sample(rng, (b, t))
    for key, value in carry["latent"].items():
        batch[LATENT_PREFIX + key] = rng.uniform(size=(b, t, *value.shape[1:])).astype(np.float16)
    return batch


def make_obs(agent, rng, n: int, first) -> dict:
    obs = {k: agent.obs_space[k].sample(rng, (n,)) for k in spaces.sensor_keys(agent.obs_space)}
    obs.update(reward=np.zeros(n, np.float32), is_first=np.asarray(first), is_last=np.zeros(n, bool),
               is_terminal=np.zeros(n, bool))  # fmt: skip
    return obs


@pytest.fixture(scope="module")
def image_agent():
    return SPEC.make(tiny_config(), IMAGE_VECTOR_OBS, MIXED_ACT)


@pytest.fixture(scope="module")
def jitted(image_agent):
    agent = image_agent

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def update(state, batch, key):
        return agent.update(state, "train", batch, key=key)

    act = eqx.filter_jit(lambda s, c, o, k, mode: agent.act(s, c, o, key=k, mode=mode))
    return update, act


def test_spec_is_registered():
    assert registry.get_agent("dreamerv3") is SPEC
    presets = registry.agent_presets(SPEC)
    for name in ("size1m", "size12m", "size25m", "size50m", "size100m", "size200m", "size400m", "debug",
                 "atari100k", "crafter", "dmc_vision", "dmc_proprio"):  # fmt: skip
        assert name in presets


def test_update_traces_once_and_first_predictions_are_zero(image_agent, jitted):
    update, _ = jitted
    rng = np.random.default_rng(0)
    state = image_agent.init(key=jax.random.key(0))
    for step in range(3):
        batch = make_batch(image_agent, rng)
        state, metrics, replay_updates = update(state, batch, jax.random.key(step))
        if step == 0:
            # Zero-initialised twohot output layers predict exactly 0; the first step's learning rate is 0.
            assert float(metrics["wm/reward_pred"]) == 0.0
            assert float(metrics["ac/value"]) == 0.0
            assert float(metrics["opt/update_rms"]) == 0.0
    assert int(state.updates) == 3
    assert all(np.isfinite(float(v)) for v in metrics.values())
    expected_terms = {f.name for f in dataclasses.fields(image_agent.config.loss_scales)}
    assert {k[len("loss/") :] for k in metrics if k.startswith("loss/") and k != "loss/total"} == expected_terms
    # Refreshed latents are aligned with the batch; the context step keeps its stored value.
    spec = image_agent.streams()["train"]
    for key, value in replay_updates.items():
        assert value.shape[:2] == (spec.batch, spec.total_length)
        np.testing.assert_array_equal(value[:, 0], batch[key][:, 0])


def test_save_load_round_trip_gives_identical_outputs(image_agent, jitted):
    update, act = jitted
    rng = np.random.default_rng(1)
    state = image_agent.init(key=jax.random.key(0))
    state, _, _ = update(state, make_batch(image_agent, rng), jax.random.key(5))
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    buffer.seek(0)
    restored = eqx.tree_deserialise_leaves(buffer, image_agent.init(key=jax.random.key(123)))
    obs = make_obs(image_agent, rng, 3, [True, False, True])
    outs = [act(s, image_agent.initial_carry(state, 3), obs, jax.random.key(7), "train") for s in (state, restored)]
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
        np.testing.assert_array_equal(a, b)
    batch = make_batch(image_agent, rng)
    copy = jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, state)
    _, m1, _ = update(copy, batch, jax.random.key(9))
    _, m2, _ = update(restored, batch, jax.random.key(9))
    for key in m1:
        np.testing.assert_array_equal(m1[key], m2[key], err_msg=key)


def test_act_resets_carry_on_first_and_returns_latents(image_agent, jitted):
    _, act = jitted
    rng = np.random.default_rng(2)
    state = image_agent.init(key=jax.random.key(0))
    obs = make_obs(image_agent, rng, 2, [False, False])
    carry, action, extras = act(state, image_agent.initial_carry(state, 2), obs, jax.random.key(1), "train")
    assert action["action"].shape == (2,) and action["action"].dtype == jnp.int32
    assert action["move"].shape == (2, 2) and np.all(np.abs(np.asarray(action["move"])) <= 2.0)
    assert set(extras) == {LATENT_PREFIX + "deter", LATENT_PREFIX + "stoch"}
    # A different carry makes no difference where is_first is set.
    first = make_obs(image_agent, rng, 2, [True, True])
    a = act(state, carry, first, jax.random.key(3), "eval")
    b = act(state, image_agent.initial_carry(state, 2), first, jax.random.key(3), "eval")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_report_returns_video_and_losses(image_agent):
    rng = np.random.default_rng(3)
    state = image_agent.init(key=jax.random.key(0))
    report = eqx.filter_jit(lambda s, b, k: image_agent.report(s, b, key=k))(
        state, make_batch(image_agent, rng), jax.random.key(0)
    )
    video = report["openloop"]
    spec = image_agent.streams()["train"]
    assert video.dtype == jnp.uint8 and video.shape == (spec.length, 2 * 16, 3 * 16, 3)
    for name in ("loss/rec", "loss/dyn", "loss/rep", "loss/rew", "loss/con", "openloop_mse"):
        assert np.isfinite(float(report[name]))


def test_without_replay_context_update_traces_and_returns_no_replay_updates():
    agent = SPEC.make(tiny_config(replay_context=0), IMAGE_VECTOR_OBS, DISCRETE_ACT)
    assert agent.streams()["train"].context == 0
    state = agent.init(key=jax.random.key(0))
    batch = make_batch(agent, np.random.default_rng(4))
    # Tracing is enough here (no compile): shapes, key sets and the loss-scale check all run at trace time.
    new_state, metrics, replay_updates = eqx.filter_eval_shape(
        lambda s, b: agent.update(s, "train", b, key=jax.random.key(2)), state, batch
    )
    assert replay_updates == {}
    assert metrics["loss/total"].shape == ()
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_bad_inputs_raise_clear_errors(image_agent):
    state = image_agent.init(key=jax.random.key(0))
    batch = make_batch(image_agent, np.random.default_rng(5))
    del batch[LATENT_PREFIX + "deter"]
    with pytest.raises(ValueError, match="latent/deter"):
        jax.eval_shape(lambda s, b: image_agent.update(s, "train", b, key=jax.random.key(0)), state, batch)
    with pytest.raises(ValueError, match="no sensor keys"):
        SPEC.make(tiny_config(), spaces.step_spaces(), DISCRETE_ACT)
    with pytest.raises(ValueError, match="scales without a term"):
        image_agent._total({"rec": jnp.zeros((2, 6))})
