"""Batch shards (`run.batch_shards`, bench/batch_shards.py): an update split into equal parts of its batch, one
per CPU device, computes the one-device update.

The test session has two CPU devices (tests/conftest.py). Observed on this CPU, two updates from nudged weights
as one device and as two shards (every agent that allows them, each stream of Hieros and IRIS; `python
scripts/batch_shards_agreement.py`): the replay latents equal, so every part drew the one-device update's random
numbers for its rows, and metrics within a relative 1.2e-6 (Plan2Explore 5.2e-6, TSSM, Hieros's level 1 and
IRIS's tokenizer 1.1e-5 to 1.3e-5; each part sums over its own rows, then the parts are averaged). Under the
tests' XLA optimisation level 0 the SVSG latents differed by up to 6.1e-5 (their float16 storage's rounding). The
test allows a relative 1e-4 for metrics, and for weights 10 learning rates (LaProp and Adam step a weight whose
gradient is at rounding level by up to a few learning rates either way).
"""

from __future__ import annotations

import json
import random

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common import shards
from agents.common.returns import PercentileNormalizer
from agents.dreamerv3 import SPEC
from agents.iris import agent as iris_lib
from agents.vsg import gate as gate_lib
from bench import batch_shards, registry, runner
from bench.runner import CompiledAgent, RunError
from tasks import toy
from tests import test_agent_contract as contract
from tests import test_iris_agent as iris_tests
from tests.runs import bench, final_agent_bytes, only_run_dir
from tests.test_dreamerv3 import IMAGE_VECTOR_OBS, MIXED_ACT, make_batch
from tests.test_dreamerv3_learning import SMOKE_OVERRIDES, read_jsonl
from tests.test_resume import kill_at_random_point


def perturbed_state(agent):
    """A fresh state with every weight nudged: the heads, zero at init, then predict varied rewards, values and
    returns, so that the return percentiles of the two halves of the batch differ from the whole batch's.
    The weights are the DreamerV3 family's `nets`; Plan2Explore's are its base agent's and its own `expl`.
    Built op by op in 8-14 s in a fresh process (jitted, 20-30 s: compiling `init` costs more), so once per test."""
    state = agent.init(key=jax.random.key(1))
    if hasattr(state, "base"):
        where = lambda s: (s.base.nets, s.expl)
    elif hasattr(state, "levels"):  # Hieros: every level's networks
        where = lambda s: tuple(level.nets for level in s.levels)
    elif hasattr(state, "tokenizer"):  # IRIS: its three components
        where = lambda s: (s.tokenizer, s.world_model, s.actor_critic)
    else:
        where = lambda s: s.nets
    params, static = eqx.partition(where(state), eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return eqx.tree_at(where, state, eqx.combine(jax.tree.unflatten(tree, leaves), static))


def two_updates(agent, batch, parts: int, stream: str = "train", start=None):
    """(metrics of the second update, its replay updates, the state after it) through the runner's compiled
    agent with `parts` batch shards, from a copy of `start` (default: `perturbed_state(agent)`)."""
    compiled = CompiledAgent(agent, jax.random.key(3), parts)
    compiled.set_state(contract.copy(perturbed_state(agent) if start is None else start))
    for counter in (1, 2):
        metrics, replay_updates = compiled.update(stream, batch, np.int32(counter))
    return jax.device_get((metrics, replay_updates, eqx.filter(compiled.state(), eqx.is_inexact_array)))


CASES = {  # every agent whose spec allows batch shards (and its stream), and DreamerV3's Gaussian latents
    "dreamerv3": ("dreamerv3", {}, "train"),
    "dreamerv3-gaussian": ("dreamerv3", {"rssm.latent": "gaussian"}, "train"),
    "vsg": ("vsg", {}, "train"),
    "svsg": ("svsg", {}, "train"),
    "thick": ("thick", {}, "train"),
    "p2e": ("p2e", {}, "train"),
    "tssm": ("tssm", {}, "train"),
    # level 0 reads images and acts in the env; level 1 of three has all three rewards and the goal autoencoder
    "hieros-level0": ("hieros", {}, "level0"),
    "hieros-level1": ("hieros", {}, "level1"),
    # IRIS on 16x16 frames and one discrete action (tests/test_iris_agent.py); the tokenizer with its warm-up
    # ending at the second update (the codebook drawn from the batch) and foreground-weighted L1 (median frame)
    "iris-tokenizer": ("iris", {"tokenizer.warmup_updates": 1, "tokenizer.foreground_weight": 10.0}, "tokenizer"),
    "iris-world-model": ("iris", {}, "world_model"),
    "iris-actor-critic": ("iris", {}, "actor_critic"),
}


def case_agent(case: str):
    """(agent, its config) of one of CASES, small enough for two updates in a test."""
    name, changes, _ = CASES[case]
    spec = registry.get_agent(name)
    if name == "iris":
        config = iris_tests.debug_config(**changes)
        return spec.make(config, iris_tests.OBS, iris_tests.ACT), config
    small = {"batch_size": 4, "batch_length": 6, "imagination.horizon": 3, **changes}
    config = registry.build_config(spec, toy.SUITE, ["debug"], small).agent
    return spec.make(config, IMAGE_VECTOR_OBS, MIXED_ACT), config


def case_batch(agent, stream: str) -> dict:
    """A random batch of `stream`: DreamerV3's test batch, or the contract test's for an agent of other streams
    (its tables' keys and shapes traced from `act`)."""
    if stream == "train":
        return make_batch(agent, np.random.default_rng(0))
    if stream in iris_lib.STREAMS:
        batch = iris_tests.make_batch(agent, stream, np.random.default_rng(0))
        if stream == "tokenizer":  # most of the first part's frames one background: the parts' weights differ
            images, rng = batch["image"], np.random.default_rng(1)
            background = images[: len(images) // 2 + 1]  # the median frame; each frame's own noise (2 / 255, below
            noise = rng.integers(-2, 3, background.shape)  # the foreground threshold) keeps the codes distinct
            background[:] = np.clip(images[0, 0].astype(int) + noise, 0, 255).astype(images.dtype)
        return batch
    rng = np.random.default_rng(0)
    obs = contract.make_obs(agent, rng, [True] * 4)

    def act_extras():  # only their shapes and dtypes are needed: traced, not run
        state = agent.init(key=jax.random.key(0))
        return agent.act(state, agent.initial_carry(state, 4), obs, key=jax.random.key(1), mode="train")[2]

    return contract.make_batch(agent, agent.streams()[stream], eqx.filter_eval_shape(act_extras), rng)


def return_percentiles(state) -> dict:
    """The return normalisers' percentile EMAs of the state (by path): metrics only for the DreamerV3 family."""
    is_normaliser = lambda x: isinstance(x, PercentileNormalizer)
    found = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_normaliser)[0]:
        if is_normaliser(leaf):
            key = jax.tree_util.keystr(path)
            found[key + ".low"], found[key + ".high"] = np.asarray(leaf.low), np.asarray(leaf.high)
    return found


def test_the_cases_cover_every_agent_that_allows_batch_shards():
    allowed = {name for name in registry.agent_names() if registry.get_agent(name).batch_shards}
    assert allowed == {agent for agent, _, _ in CASES.values()}


SLOW_CASES = {"hieros-level0"}  # 55 s on the 2-core CPU; level 1 runs the same sharded code (draws, means)
STREAM_AGENTS = {"hieros", "iris"}  # compared in tests/test_batch_shards_streams.py, so that `pytest -n 2 --dist
# loadfile` runs the two halves of these comparisons side by side (both files: 5.5 minutes on 2 cores)


def cases(several_streams: bool) -> list:
    """The CASES of the agents with several streams (Hieros, IRIS), or of the others; slow ones marked."""
    chosen = [c for c in sorted(CASES) if (CASES[c][0] in STREAM_AGENTS) == several_streams]
    return [pytest.param(c, marks=[pytest.mark.slow] * (c in SLOW_CASES)) for c in chosen]


@pytest.mark.parametrize("case", cases(several_streams=False))
def test_two_shards_compute_the_one_device_update(case):
    check_two_shards(case)


def check_two_shards(case: str) -> None:
    """Both action heads (categorical and normal samples) and the agents' latents and gates: every random draw
    of the update goes through `shards.draw` (or a row's key from `shards.split`). The return percentiles are
    taken over the whole batch (`ac/retnorm_*`, Hieros's normalisers in its state), the gradient and metrics are
    the whole batch's means (`opt/grad_norm`, every loss)."""
    assert len(jax.devices("cpu")) >= 2, "tests/conftest.py gives the test session two CPU devices"
    agent, config = case_agent(case)
    stream = CASES[case][2]
    batch, start = case_batch(agent, stream), perturbed_state(agent)
    one_metrics, one_replay, one_state = two_updates(agent, batch, 1, stream, start)
    two_metrics, two_replay, two_state = two_updates(agent, batch, 2, stream, start)

    one_norms, two_norms = return_percentiles(one_state), return_percentiles(two_state)
    if "ac/retnorm_high" in one_metrics:
        assert one_metrics["ac/retnorm_high"] - one_metrics["ac/retnorm_low"] > 1e-3  # the percentiles are tested
    elif one_norms:  # Hieros: the normalisers in the state (IRIS has none)
        for name, value in one_norms.items():
            np.testing.assert_allclose(two_norms[name], value, rtol=1e-4, atol=1e-8, err_msg=name)
        assert max(abs(v) for v in one_norms.values()) > 1e-3
    assert sorted(two_metrics) == sorted(one_metrics)
    for name in one_metrics:
        np.testing.assert_allclose(two_metrics[name], one_metrics[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert sorted(two_replay) == sorted(one_replay)
    for name in one_replay:
        assert two_replay[name].shape == one_replay[name].shape == (4, *one_replay[name].shape[1:])
        np.testing.assert_allclose(two_replay[name].astype(np.float32), one_replay[name].astype(np.float32),
                                   rtol=1e-3, atol=1e-3, err_msg=name)  # fmt: skip
    assert_states_agree(two_state, one_state, 10 * largest_learning_rate(config))


def largest_learning_rate(config) -> float:
    """LaProp's and Adam's steps are a few learning rates at most: the DreamerV3 family's `optimizer.lr`,
    Hieros's world-model rate (its larger), IRIS's `lr`."""
    if not hasattr(config, "optimizer"):
        return config.lr
    return getattr(config.optimizer, "lr", None) or max(config.optimizer.model_lr, config.optimizer.ac_lr)


def assert_states_agree(two_state, one_state, weight_tolerance: float):
    """Every float of the states after the updates, to float rounding and LaProp's amplification of it.

    LaProp divides each gradient by its running RMS: a weight whose gradient is zero up to float rounding steps
    by up to ~3 learning rates either way (observed: 5 learning rates apart after two updates, SVSG), hence
    `weight_tolerance`; its momentum (the running mean of those quotients, `...[1].ema`) is then O(1) with
    either sign, so the momentum is compared where the gradient's second moment (`...[0].nu`) is above 1e-12 of
    its largest. TSSM's attention key biases are such weights (softmax ignores a shift of every key's logit)."""
    one = {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_flatten_with_path(one_state)[0]}
    two = {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_flatten_with_path(two_state)[0]}
    assert sorted(two) == sorted(one)
    for name, expected in one.items():
        actual = two[name]
        if name.endswith("[1].ema"):
            second_moment = one[name.removesuffix("[1].ema") + "[0].nu"]
            above_rounding = second_moment > 1e-12 * second_moment.max()
            assert above_rounding.mean() > 0.9, name  # nearly every weight is compared
            actual, expected = actual[above_rounding], expected[above_rounding]
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=weight_tolerance, err_msg=name)


def test_the_gate_free_bits_clip_the_whole_batch_mean():
    """VSG's gate KL is max(mean over the batch, free bits): under shards, the whole batch's mean. Here the first
    half's rows sit at the gate prior (KL 0, below the free bits) and the second half's far from it."""
    rows = jnp.concatenate([jnp.full((2, 2, 3), np.log(0.4 / 0.6)), jnp.full((2, 2, 3), 2.0)])

    def loss(scale, x):
        return gate_lib.gate_kl(scale * x, prior=0.4, free=0.1)[0]

    whole_value, whole_grad = jax.value_and_grad(loss)(1.0, rows)
    assert loss(1.0, rows[:2]) == pytest.approx(0.1) and whole_value > 0.5  # the first half alone is clipped

    def part(scale, x):
        with shards.batch_shards(2):
            value, grad = jax.value_and_grad(loss)(scale, x)
            return value, shards.mean(grad)  # as DreamerV3.train_step averages the parts' gradients

    spec = jax.sharding.PartitionSpec
    value, grad = jax.shard_map(part, mesh=batch_shards.mesh(2), in_specs=(spec(), spec(shards.AXIS)),
                                out_specs=(spec(), spec()), check_vma=False)(1.0, rows)  # fmt: skip
    np.testing.assert_allclose(value, whole_value, rtol=1e-6)
    np.testing.assert_allclose(grad, whole_grad, rtol=1e-6)


def test_the_mean_over_parts_keeps_every_leaf_its_shape_and_own_values():
    """`shards.mean` sends the leaves as one vector per dtype; each leaf gets the mean of its own rows (a mean of
    integers is a float, as `pmean` gives it)."""
    tree = {"w": jnp.arange(2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 3), "b": jnp.array([[1.0], [5.0]]),
            "count": jnp.array([[2], [4]], jnp.int32), "scalar": jnp.array([3.0, 7.0])}  # fmt: skip

    def part(tree):
        with shards.batch_shards(2):
            return shards.mean(jax.tree.map(lambda x: x[0], tree))  # this part's row of each leaf

    spec = jax.sharding.PartitionSpec
    out = jax.shard_map(part, mesh=batch_shards.mesh(2), in_specs=(spec(shards.AXIS),), out_specs=spec(),
                        check_vma=False)(tree)  # fmt: skip
    expected = {"w": np.arange(12.0).reshape(2, 2, 3).mean(0), "b": np.array([3.0]), "count": np.array([3]),
                "scalar": np.array(5.0)}  # fmt: skip
    for name, value in expected.items():
        assert out[name].shape == value.shape and out[name].dtype == jnp.float32, name
        np.testing.assert_array_equal(out[name], value)


def test_shard_helpers_outside_batch_shards_are_the_plain_operations():
    key = jax.random.key(0)
    assert shards.parts() == 1
    np.testing.assert_array_equal(shards.draw(jax.random.normal, key, (3, 2)), jax.random.normal(key, (3, 2)))
    logits = jnp.log(jnp.array([[0.2, 0.3, 0.5]] * 64))
    from agents.common import distributions as dists

    np.testing.assert_array_equal(dists.categorical_sample(key, logits), jax.random.categorical(key, logits, -1))
    gate_logits = jnp.linspace(-3.0, 3.0, 64).reshape(16, 4)
    np.testing.assert_array_equal(gate_lib.sample_gate(gate_logits, key=key),
                                  jax.random.bernoulli(key, jax.nn.sigmoid(gate_logits)).astype(jnp.float32))
    tree = {"a": jnp.arange(3.0)}
    assert shards.mean(tree) is tree and shards.gather(tree["a"]) is tree["a"]


def test_each_shard_draws_its_rows_of_the_whole_draw():
    key = jax.random.key(5)
    mesh = batch_shards.mesh(2)

    def part(rows):
        with shards.batch_shards(2):
            return shards.draw(jax.random.normal, key, rows.shape)

    spec = jax.sharding.PartitionSpec(shards.AXIS)
    drawn = jax.shard_map(part, mesh=mesh, in_specs=spec, out_specs=spec)(jnp.zeros((6, 2)))
    np.testing.assert_array_equal(drawn, jax.random.normal(key, (6, 2)))

    def time_major_part(rows):  # (time, batch): the batch is axis 1
        with shards.batch_shards(2):
            return shards.draw(jax.random.normal, key, (5, rows.shape[0]), axis=1)

    out = jax.sharding.PartitionSpec(None, shards.AXIS)
    drawn = jax.shard_map(time_major_part, mesh=mesh, in_specs=spec, out_specs=out)(jnp.zeros((6,)))
    np.testing.assert_array_equal(drawn, jax.random.normal(key, (5, 6)))
    with shards.batch_shards(2), pytest.raises(ValueError, match="needs an axis 0 over the batch"):
        shards.draw(jax.random.normal, key, ())


def test_each_shard_splits_its_rows_keys_and_draws_plainly_inside_a_row():
    """`shards.split`: this part's rows of the whole batch's keys (Hieros's and IRIS's keys per row, also at a
    (rows, steps) shape); `shards.per_row`: the row's own draw, as one device draws it with that key."""
    key = jax.random.key(7)

    def rows_draws(rows):
        keys = shards.split(key, (rows.shape[0], 3))
        one_row = shards.per_row(lambda k: shards.draw(jax.random.normal, k, (4,)))  # axis 0: not the batch's
        return jax.random.key_data(keys), jax.vmap(jax.vmap(one_row))(keys)

    keys, draws = split_over_parts(rows_draws, jnp.zeros((6,)))
    whole = jax.random.split(key, (6, 3))
    np.testing.assert_array_equal(keys, jax.random.key_data(whole))
    np.testing.assert_array_equal(draws, jax.vmap(jax.vmap(lambda k: jax.random.normal(k, (4,))))(whole))
    assert shards.per_row(shards.parts)() == 1


def test_bad_batch_shards_settings_get_one_clear_line():
    unsharded = registry.get_agent("cem_planet")
    with pytest.raises(batch_shards.BatchShardsError, match="agent 'cem_planet' does not support batch shards"):
        batch_shards.check(unsharded, 2, {"train": 16})
    uneven = r"must divide every stream's batch size; got \{'train': 5\}"
    with pytest.raises(batch_shards.BatchShardsError, match=uneven):
        batch_shards.check(SPEC, 2, {"train": 5})
    batch_shards.check(unsharded, 1, {"train": 5})  # one part: nothing to check
    with pytest.raises(batch_shards.BatchShardsError, match="needs 64 CPU devices; JAX started with"):
        batch_shards.ensure_devices(64)


def test_vmap_runs_refuse_batch_shards(tmp_path):
    resolved = runner.resolve("dreamerv3", "toy", "reach", ("debug",), {"run.batch_shards": 2})
    from bench import vmap_run

    with pytest.raises(RunError, match="run.batch_shards > 1 runs one seed at a time"):
        vmap_run.run_group(resolved, [0, 1], root=tmp_path, quiet=True)


def test_run_with_two_batch_shards_through_the_runner(tmp_path):
    overrides = {**SMOKE_OVERRIDES, "batch_size": 4, "run.batch_shards": 2}
    folder = runner.run("dreamerv3", "toy", "reach", seed=0, configs=("debug",), overrides=overrides, root=tmp_path,
                        quiet=True)  # fmt: skip
    trained = [m for m in read_jsonl(folder / "metrics.jsonl") if "loss/total" in m]
    assert trained and all(np.isfinite(m["loss/total"]) for m in trained)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert "batch_shards: 2" in (folder / "config.yaml").read_text()


@pytest.mark.slow
def test_a_run_with_batch_shards_killed_with_sigkill_resumes_to_the_same_run(tmp_path):
    """The checkpoint holds the first device's copy of the replicated state; a resumed run puts it back on
    both devices and continues exactly (the same episodes, metrics and final weights as a run not killed)."""
    args = ["--agent", "dreamerv3", "--suite", "toy", "--task", "reach", "--configs", "debug", "--seed", "3",
            "--steps", "400", "--run.train_fill", "60", "--run.train_ratio", "16", "--run.save_every", "40",
            "--run.log_every", "50", "--run.eval_episodes", "1", "--batch_size", "4", "--batch_length", "8",
            "--run.batch_shards", "2", "--quiet"]  # fmt: skip
    bench("run", *args, root=tmp_path / "straight")
    straight = only_run_dir(tmp_path / "straight")
    killed_root = tmp_path / "killed"
    target = kill_at_random_point(args, killed_root, random.Random(0), 400)
    bench("run", *args, root=killed_root)
    folder = only_run_dir(killed_root)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["segments"][1]["resumed_from_step"] >= target
    assert (folder / "scores.jsonl").read_text() == (straight / "scores.jsonl").read_text()
    assert final_agent_bytes(folder) == final_agent_bytes(straight)
    metrics = lambda f: [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}  # noqa: E731
                         for line in (f / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert metrics(folder) == metrics(straight)


def test_batch_shards_at_one_keeps_the_hashes_and_folders_of_earlier_runs(tmp_path):
    """Runs written before `run.batch_shards` existed (their config.yaml has no such key) keep their config hash
    and can be resumed; a run with batch shards is another config (another folder)."""
    import hashlib

    import yaml

    from bench import config as config_lib

    plain = runner.resolve("dreamerv3", "toy", "reach", ("debug",)).config
    sharded = runner.resolve("dreamerv3", "toy", "reach", ("debug",), {"run.batch_shards": 2}).config
    earlier = plain.to_dict()
    del earlier["run"]["batch_shards"]
    hashed = {k: v for k, v in earlier.items() if k != "logger"}
    assert plain.hash() == hashlib.sha256(config_lib.canonical_json(hashed).encode()).hexdigest()[:10]
    assert sharded.hash() != plain.hash()

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(earlier))
    assert runner._check_folder(folder, plain, restart=False) is None  # the same config: no checkpoint yet
    with pytest.raises(RunError, match=r"differs at run\.batch_shards"):
        runner._check_folder(folder, sharded, restart=False)


def split_over_parts(fn, *args):
    """`fn(*args)` as two batch shards: every argument and output split along its first axis."""
    spec = jax.sharding.PartitionSpec(shards.AXIS)

    def part(*rows):
        with shards.batch_shards(2):
            return fn(*rows)

    return jax.shard_map(part, mesh=batch_shards.mesh(2), in_specs=spec, out_specs=spec, check_vma=False)(*args)


def test_thick_imagination_and_coarse_steps_draw_the_one_device_gate_noise():
    """THICK's C-RSSM draws gate noise for its imagination and coarse steps (the filtering's time-major draw is
    covered by the whole update above): as two shards each part gets its rows of the one-device draws."""
    agent, _ = case_agent("thick")
    dynamics = perturbed_state(agent).nets.dynamics
    crssm, rng = dynamics.crssm, np.random.default_rng(0)
    rows = 4
    latent = {"deter": rng.normal(size=(rows, crssm.deter)).astype(np.float32),
              "stoch": jax.nn.one_hot(rng.integers(0, crssm.classes, (rows, crssm.stoch)), crssm.classes),
              "context": rng.uniform(-1, 1, (rows, crssm.context)).astype(np.float32)}  # fmt: skip
    action = rng.normal(size=(rows, dynamics.layout.size)).astype(np.float32)
    key = jax.random.key(7)

    imagine = lambda latent, action: crssm.imagine_step(latent, action, key=key)
    coarse = lambda stoch, context, action: crssm.coarse_step(stoch, context, action, key=key)
    for fn, args in ((imagine, (latent, action)), (coarse, (latent["stoch"], latent["context"], action))):
        whole, parts = jax.device_get((fn(*args), split_over_parts(fn, *args)))
        for a, b in zip(jax.tree.leaves(parts), jax.tree.leaves(whole)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the noise matters: another key gives other contexts
    other = crssm.coarse_step(latent["stoch"], latent["context"], action, key=jax.random.key(8))[1]
    assert np.abs(np.asarray(other) - np.asarray(coarse(latent["stoch"], latent["context"], action)[1])).max() > 1e-3


def test_thick_high_level_metrics_are_means_over_the_whole_batch_targets():
    """The high-level metrics average over the batch's segment targets, whose number differs between the parts
    (here 1 of 6 steps in each of the first part's rows, 5 of 6 in the second's): as two shards they are the
    whole batch's averages, not the mean of each part's."""
    from agents.common import distributions as dists
    from agents.thick.highlevel import highlevel_losses
    from agents.thick.segments import SegmentTargets

    agent, _ = case_agent("thick")
    dynamics = perturbed_state(agent).nets.dynamics
    crssm, rng = dynamics.crssm, np.random.default_rng(0)
    rows, steps = 4, 6
    normal = lambda *shape: rng.normal(size=(rows, steps, *shape)).astype(np.float32)
    mask = np.zeros((rows, steps), np.float32)
    mask[:2, 0] = 1.0
    mask[2:, 1:] = 1.0
    targets = SegmentTargets(
        state=jax.nn.log_softmax(normal(crssm.stoch, crssm.classes)), action=normal(dynamics.layout.size),
        context=normal(crssm.context), time=rng.uniform(0, 5, (rows, steps)).astype(np.float32),
        reward=normal(), mask=mask,
    )  # fmt: skip
    inputs = normal(crssm.coarse_size)
    bins = dists.symexp_bins(dynamics.hl_bins)

    def metrics(inputs, targets):
        _, values = highlevel_losses(dynamics.highlevel, inputs, targets, dynamics.layout, bins,
                                     key=jax.random.key(9), kl_balance=dynamics.kl_balance)  # fmt: skip
        return jax.tree.map(lambda x: jnp.broadcast_to(shards.mean(x), (1,)), values)  # one row per part

    whole = metrics(inputs, targets)
    parts = split_over_parts(metrics, inputs, targets)
    for name in ("hl/target_time", "hl/pred_time", "hl/state_kl", "hl/action_kl", "hl/target_fraction"):
        np.testing.assert_allclose(parts[name], np.repeat(whole[name], 2), rtol=1e-5, err_msg=name)
    own_means = [(targets.time[half] * mask[half]).sum() / mask[half].sum() for half in (slice(0, 2), slice(2, 4))]
    assert abs(np.mean(own_means) - whole["hl/target_time"][0]) > 0.1  # the mean of the parts' own would differ
