"""IRIS agent contract at `debug` (init, act, per-stream trace-once updates, report, save/load) and its
numerics by hand (IRIS lambda returns, world-model labels and masks)."""

from __future__ import annotations

import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.iris import SPEC, IRISConfig
from agents.iris.agent import SEGMENT_START, ActorCritic, iris_lambda_returns, transition_labels
from bench import config as config_lib
from bench import registry, spaces

OBS = {"image": spaces.image(16, 16), **spaces.step_spaces()}
ACT = {"action": spaces.discrete(4)}


def debug_config(**changes) -> IRISConfig:
    config = config_lib.Config(
        run=config_lib.RunConfig(), replay=config_lib.ReplayConfig(), logger=config_lib.LoggerConfig(),
        env=config_lib.RunConfig(), agent=IRISConfig(),
    )  # fmt: skip
    preset = registry.agent_presets(SPEC)["debug"]
    config = config_lib.apply(config, {k: v for k, v in preset.items() if k not in ("run", "replay")})
    return config_lib.apply(config, changes).agent


@pytest.fixture(scope="module")
def agent():
    return SPEC.make(debug_config(train_episode_steps=3), OBS, ACT)


@pytest.fixture(scope="module")
def state(agent):
    return eqx.filter_jit(lambda k: agent.init(key=k))(jax.random.key(0))


@pytest.fixture(scope="module")
def jitted(agent):
    traces = {}

    def make_update(stream):
        def update(state, batch, key):
            traces[stream] = traces.get(stream, 0) + 1
            return agent.update(state, stream, batch, key=key)

        return jax.jit(update)

    updates = {name: make_update(name) for name in agent.streams()}
    act = jax.jit(lambda s, c, o, k, mode: agent.act(s, c, o, key=k, mode=mode), static_argnames="mode")
    return updates, act, traces


def make_batch(agent, stream, rng):
    spec = agent.streams()[stream]
    b, t = spec.batch, spec.total_length
    batch = {"image": OBS["image"].sample(rng, (b, t)), "action": ACT["action"].sample(rng, (b, t))}
    batch["reward"] = rng.normal(size=(b, t)).astype(np.float32)
    batch["is_first"] = rng.uniform(size=(b, t)) < 0.15
    batch["is_last"] = np.roll(batch["is_first"], -1, axis=1)
    batch["is_terminal"] = batch["is_last"] & (rng.uniform(size=(b, t)) < 0.5)
    batch[SEGMENT_START] = batch["is_first"] | (rng.uniform(size=(b, t)) < 0.1)
    return batch


def make_obs(rng, n, first, terminal=None):
    return {
        "image": OBS["image"].sample(rng, (n,)),
        "reward": np.zeros(n, np.float32),
        "is_first": np.asarray(first),
        "is_last": np.zeros(n, bool),
        "is_terminal": np.zeros(n, bool) if terminal is None else np.asarray(terminal),
    }


# ------------------------------------------------------------------------------------------- numerics


def test_actor_critic_matches_its_channel_first_definition():
    """The policy's convs run channel-last (speed); IRIS's network is conv -> 2x2 max-pool -> ReLU per stage
    on the channel-first frame, flattened (C, H, W) into the LSTM: written out here with Equinox's calls."""
    net = ActorCritic(16, (4, 8), 16, 5, key=jax.random.key(0))
    frame = jax.random.uniform(jax.random.key(1), (16, 16, 3))
    lstm = (jax.random.normal(jax.random.key(2), (16,)), jax.random.normal(jax.random.key(3), (16,)))
    x = jnp.moveaxis(frame, -1, 0) * 2.0 - 1.0
    for layer in net.convs:
        x = layer(x)
        c, h, w = x.shape
        x = jax.nn.relu(x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4)))
    hidden, cell = net.lstm(x.reshape(-1), lstm)
    logits, value, (got_hidden, got_cell) = jax.tree.map(lambda a: a[0], net(frame[None], jax.tree.map(
        lambda a: a[None], lstm)))  # a batch of one
    np.testing.assert_allclose(got_hidden, hidden, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_cell, cell, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, net.actor(hidden), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, net.critic(hidden)[0], rtol=1e-5, atol=1e-6)


def test_lambda_returns_match_iris_loop():
    """Golden values from IRIS's backward loop, written out in numpy."""
    rng = np.random.default_rng(0)
    b, h, gamma, lam = 3, 6, 0.9, 0.8
    reward = rng.normal(size=(b, h)).astype(np.float32)
    end = (rng.uniform(size=(b, h)) < 0.3).astype(np.float32)
    value = rng.normal(size=(b, h)).astype(np.float32)
    expected = np.empty_like(value)
    expected[:, -1] = value[:, -1]
    expected[:, :-1] = reward[:, :-1] + (1 - end[:, :-1]) * gamma * (1 - lam) * value[:, 1:]
    last = value[:, -1]
    for i in reversed(range(h - 1)):
        expected[:, i] += (1 - end[:, i]) * gamma * lam * last
        last = expected[:, i]
    got = iris_lambda_returns(jnp.asarray(reward), jnp.asarray(end), jnp.asarray(value), gamma, lam)
    np.testing.assert_allclose(got, expected[:, :-1], rtol=1e-5, atol=1e-6)


def test_transition_labels_by_hand():
    # One sequence of 5 rows = 4 transitions. Row 3 starts a new training episode (e.g. after a life loss at
    # row 2), so transitions 0, 1 are alive; transition 2 (row 2 -> row 3) crosses into the next one.
    batch = {
        "reward": np.array([[9.0, -2.0, 0.0, 3.0, 1.0]], np.float32),
        "is_terminal": np.array([[0, 0, 1, 0, 0]], bool),
        "is_last": np.zeros((1, 5), bool),
        SEGMENT_START: np.array([[1, 0, 0, 1, 0]], bool),
    }
    labels = transition_labels(batch, 4, 2)
    np.testing.assert_array_equal(labels["reward"], [[0, 1, 2, 2]])  # sign of rows 1..4, +1
    np.testing.assert_array_equal(labels["end"], [[0, 1, 0, 0]])
    np.testing.assert_array_equal(labels["alive"], [[1, 1, 0, 0]])
    np.testing.assert_array_equal(labels["frame_mask"][0], [[0, 1], [1, 1], [1, 1], [0, 0]])
    # is_last at row 1 ends the episode after transition 0 (row 1's action is never executed).
    batch["is_last"] = np.array([[0, 1, 0, 0, 0]], bool)
    batch[SEGMENT_START] = np.array([[0, 0, 1, 0, 0]], bool)
    np.testing.assert_array_equal(transition_labels(batch, 4, 2)["alive"], [[1, 0, 0, 0]])


def test_streams_follow_iris_schedule():
    agent = SPEC.make(IRISConfig(), {"image": spaces.image(64, 64), **spaces.step_spaces()}, ACT)
    streams = agent.streams()
    assert list(streams) == ["world_model", "tokenizer", "actor_critic"]
    # Upstream trains a component in epochs > start_after_epochs (5, 25, 50), 200 env steps per epoch.
    assert [streams[n].start for n in ("tokenizer", "world_model", "actor_critic")] == [1200, 5200, 10200]
    assert (streams["tokenizer"].batch, streams["tokenizer"].total_length) == (256, 1)
    assert (streams["world_model"].batch, streams["world_model"].total_length) == (64, 21)
    actor_critic = streams["actor_critic"]
    assert (actor_critic.batch, actor_critic.context, actor_critic.length) == (64, 20, 1)
    for spec in streams.values():  # 200 updates per 200 collected steps
        assert spec.ratio / (spec.batch * spec.length) == pytest.approx(1.0)
    assert agent.frame_tokens == 16


# ------------------------------------------------------------------------------------------- contract


def test_act_resets_carry_on_first_and_after_training_episode_ends(agent, state, jitted):
    _, act, _ = jitted
    rng = np.random.default_rng(1)
    obs = make_obs(rng, 3, [True, True, True])
    fresh = agent.initial_carry(state, 3)
    carry, action, extras = act(state, fresh, obs, jax.random.key(0), "train")
    assert action["action"].shape == (3,) and action["action"].dtype == jnp.int32
    np.testing.assert_array_equal(extras[SEGMENT_START], [True, True, True])
    carry, _, _ = act(state, carry, make_obs(rng, 3, [False] * 3), jax.random.key(1), "train")
    assert float(jnp.abs(carry["lstm"][0]).max()) > 0
    obs = make_obs(rng, 3, [True, False, False], terminal=[False, True, False])
    stepped, _, extras = act(state, carry, obs, jax.random.key(2), "train")
    reset, _, _ = act(state, agent.initial_carry(state, 3), obs, jax.random.key(2), "train")
    np.testing.assert_allclose(stepped["lstm"][0][0], reset["lstm"][0][0], rtol=1e-6)  # is_first: fresh state
    assert not np.allclose(stepped["lstm"][0][1], reset["lstm"][0][1])
    np.testing.assert_array_equal(extras[SEGMENT_START], [True, False, False])
    # Lane 1 lost a life (terminal, not last): the next step starts a training episode; lane 2 has done its
    # 3 steps (the cap at this config); lane 0 just started. In eval neither rule applies.
    np.testing.assert_array_equal(stepped["restart"], [False, True, True])
    evaluated, _, _ = act(state, carry, obs, jax.random.key(2), "eval")
    np.testing.assert_array_equal(evaluated["restart"], [False, False, False])
    # The step cap (3 at this config) starts a new training episode after 3 steps.
    carry = agent.initial_carry(state, 1)
    starts = []
    for t in range(7):
        carry, _, extras = act(state, carry, make_obs(rng, 1, [t == 0]), jax.random.key(t), "train")
        starts.append(bool(extras[SEGMENT_START][0]))
    assert starts == [True, False, False, True, False, False, True]


def test_eval_samples_at_temperature(agent, state, jitted):
    """Evaluation samples at temperature 0.5: empirical action frequencies follow softmax(logits / 0.5)."""
    _, act, _ = jitted
    rng = np.random.default_rng(2)
    obs = make_obs(rng, 1, [True])
    obs = {k: np.repeat(v, 2000, 0) for k, v in obs.items()}
    _, action, _ = act(state, agent.initial_carry(state, 2000), obs, jax.random.key(3), "eval")
    frames = agent._reconstruct(state.tokenizer, obs["image"][:1])
    lstm = agent.initial_carry(state, 1)["lstm"]
    logits, _, _ = state.actor_critic(frames, lstm)
    expected = np.asarray(jax.nn.softmax(logits[0] / 0.5))
    counts = np.bincount(np.asarray(action["action"]), minlength=4) / 2000
    np.testing.assert_allclose(counts, expected, atol=0.04)


def test_each_stream_traces_once_and_trains_only_its_component(agent, state, jitted):
    updates, _, traces = jitted
    rng = np.random.default_rng(3)
    components = {"tokenizer": "tokenizer", "world_model": "world_model", "actor_critic": "actor_critic"}
    for stream, update in updates.items():
        new, metrics, replay_updates = update(state, make_batch(agent, stream, rng), jax.random.key(4))
        new, metrics, _ = update(new, make_batch(agent, stream, rng), jax.random.key(5))
        assert traces[stream] == 1, stream
        assert replay_updates == {}
        assert metrics and all(np.isfinite(float(v)) for v in metrics.values()), (stream, metrics)
        assert {"loss", "grad_norm"} <= set(metrics)
        assert int(new.updates[stream]) == 2
        for name in components:
            before = jax.tree.leaves(eqx.filter(getattr(state, name), eqx.is_inexact_array))
            after = jax.tree.leaves(eqx.filter(getattr(new, name), eqx.is_inexact_array))
            changed = any(not np.array_equal(a, b) for a, b in zip(before, after))
            assert changed == (name == stream), (stream, name)


def test_tokenizer_warmup_ends_with_a_codebook_of_encodings_at_the_right_update():
    """`tokenizer.warmup_updates` = 2 (ours): updates 0 and 1 (the counter before each) are warm-up; update 2
    first sets the codebook to encodings of its batch, then trains VQ; the codebook is left alone before and
    after that update."""
    agent = SPEC.make(debug_config(**{"tokenizer.warmup_updates": 2}), OBS, ACT)
    state = agent.init(key=jax.random.key(0))
    rng = np.random.default_rng(7)
    batch = make_batch(agent, "tokenizer", rng)
    frames = jnp.asarray(batch["image"]).reshape(-1, *batch["image"].shape[2:])
    z, _ = state.tokenizer._encode(frames)
    flat = np.asarray(z).reshape(-1, z.shape[-1])

    def at(count):
        return eqx.tree_at(lambda s: s.updates["tokenizer"], state, jnp.asarray(count, jnp.int32))

    for count, warm in ((0, 1.0), (1, 1.0), (2, 0.0), (3, 0.0)):
        _, metrics = agent._tokenizer_loss(state.tokenizer, at(count), batch, key=jax.random.key(1))
        assert float(metrics["warmup"]) == warm, count
        seeded = np.asarray(agent._end_tokenizer_warmup(at(count), batch, jax.random.key(2)).tokenizer.codebook)
        if count == 2:
            distance = np.abs(flat[:, None] - seeded[None]).sum(-1).min(0)  # each entry to its nearest encoding
            np.testing.assert_allclose(distance, 0.0, atol=1e-4)  # compiled (cond) vs eager encoder
        else:
            np.testing.assert_array_equal(seeded, np.asarray(state.tokenizer.codebook))
    with pytest.raises(ValueError, match="warmup_updates"):
        debug_config(**{"tokenizer.warmup_updates": -1})
    with pytest.raises(ValueError, match="foreground_weight"):
        debug_config(**{"tokenizer.foreground_weight": -1.0})


def test_report_images(agent, state):
    rng = np.random.default_rng(4)
    batch = make_batch(agent, "world_model", rng)
    out = jax.jit(lambda s, b, k: agent.report(s, b, key=k))(state, batch, jax.random.key(0))
    rows = min(4, batch["image"].shape[0])
    t = batch["image"].shape[1]
    assert out["imagination"].dtype == jnp.uint8 and out["imagination"].shape == (t, rows * 16, 32, 3)
    assert out["reconstructions"].dtype == jnp.uint8 and out["reconstructions"].shape[1:] == (32, 3)
    # The left half of the rollout is the real sequence.
    np.testing.assert_array_equal(out["imagination"][:, :16, :16], batch["image"][0])
    # The strip: sequence 0's real frames along the first row, its imagined frames (the video's right half)
    # along the second.
    strip = out["imagination_strip"]
    assert strip.dtype == jnp.uint8 and strip.shape == (rows * 2 * 16, t * 16, 3)
    for step in range(t):
        np.testing.assert_array_equal(strip[:16, 16 * step : 16 * (step + 1)], batch["image"][0, step])
        imagined = out["imagination"][step, :16, 16:]
        np.testing.assert_array_equal(strip[16:32, 16 * step : 16 * (step + 1)], imagined)


@pytest.mark.slow  # the default run covers this through tests/test_agent_contract.py
def test_save_load_round_trip_gives_identical_outputs(agent, state, jitted):
    updates, act, _ = jitted
    rng = np.random.default_rng(5)
    state, _, _ = updates["tokenizer"](state, make_batch(agent, "tokenizer", rng), jax.random.key(6))
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    buffer.seek(0)
    other = eqx.filter_jit(lambda k: agent.init(key=k))(jax.random.key(123))
    restored = eqx.tree_deserialise_leaves(buffer, other)
    obs = make_obs(rng, 3, [True, False, True])
    outs = [act(s, agent.initial_carry(s, 3), obs, jax.random.key(7), "train") for s in (state, restored)]
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
        np.testing.assert_array_equal(a, b)
    batch = make_batch(agent, "actor_critic", rng)
    copy = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
    m1 = updates["actor_critic"](copy, batch, jax.random.key(9))[1]
    m2 = updates["actor_critic"](restored, batch, jax.random.key(9))[1]
    for key in m1:
        np.testing.assert_array_equal(m1[key], m2[key], err_msg=key)


def test_burn_in_forgets_frames_before_a_training_episode_start(agent, state):
    """Burn-in frames from an earlier training episode must not reach the imagined trajectory."""
    rng = np.random.default_rng(6)
    batch = make_batch(agent, "actor_critic", rng)  # rows: burn_in = 2, then the start frame
    batch["is_first"][:] = False
    batch["is_last"][:] = False
    batch[SEGMENT_START][:] = False
    loss = jax.jit(lambda s, b, k: agent._actor_critic_loss(s.actor_critic, s, b, key=k)[1])
    changed = {**batch, "image": batch["image"].copy()}
    changed["image"][:, 0] = 255 - changed["image"][:, 0]
    base, moved = loss(state, batch, jax.random.key(0)), loss(state, changed, jax.random.key(0))
    assert float(base["value_mean"]) != float(moved["value_mean"])  # same episode: row 0 matters
    for b in (batch, changed):
        b[SEGMENT_START][:, 1] = True  # a new training episode from row 1 on
    base, moved = loss(state, batch, jax.random.key(0)), loss(state, changed, jax.random.key(0))
    for key in base:
        np.testing.assert_array_equal(base[key], moved[key], err_msg=key)


def test_atari100k_model_traces_every_update():
    """IRIS's full Atari 100k model (64x64 frames, 18 actions, 340-token context) traces every stream's update
    (shapes only: no compute)."""
    obs_space = {"image": spaces.image(64, 64), **spaces.step_spaces()}
    agent = SPEC.make(IRISConfig(), obs_space, {"action": spaces.discrete(18)})
    state = eqx.filter_eval_shape(lambda: agent.init(key=jax.random.key(0)))
    assert state.world_model.max_tokens == 340 and state.world_model.tokens_per_step == 17
    assert state.tokenizer.codebook.shape == (512, 512)
    for name, spec in agent.streams().items():
        b, t = spec.batch, spec.total_length
        batch = {
            "image": jax.ShapeDtypeStruct((b, t, 64, 64, 3), jnp.uint8),
            "action": jax.ShapeDtypeStruct((b, t), jnp.int32),
            "reward": jax.ShapeDtypeStruct((b, t), jnp.float32),
        }
        for flag in ("is_first", "is_last", "is_terminal", SEGMENT_START):
            batch[flag] = jax.ShapeDtypeStruct((b, t), jnp.bool_)
        update = lambda s, x: agent.update(s, name, x, key=jax.random.key(0))  # noqa: E731
        new, metrics, _ = jax.eval_shape(update, state, batch)
        assert all(m.shape == () for m in metrics.values()), name
        assert jax.tree.structure(new) == jax.tree.structure(state), name
