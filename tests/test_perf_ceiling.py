"""`bench perf agent --ceiling`: products found in the update's jaxpr with how often they run, and the
arithmetic of the products-only time and the utilisation ceiling. Golden FLOPs: 2 x multiply-adds, by hand."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import cli, perf_ceiling
from bench.perf_ceiling import Product


def _update(x, w, kernel, image):
    """A conv, a matmul used twice, a 5-step scan of a matmul, a cond whose costlier branch has a matmul,
    and a matmul whose result is never used."""
    layout = ("NHWC", "HWIO", "NHWC")
    conv = jax.lax.conv_general_dilated(image, kernel, (1, 1), "SAME", dimension_numbers=layout)
    y = x @ w + x @ w  # [3, 4] @ [4, 2], twice

    def step(carry, _):
        return carry @ jnp.eye(4), None  # [3, 4] @ [4, 4]

    z, _ = jax.lax.scan(step, x, None, length=5)
    branch = jax.lax.cond(x[0, 0] > 0, lambda v: (v @ w).sum(), lambda v: v.sum(), x)
    _unused = x.T @ x  # dead code: XLA drops it, so it is not counted
    return conv.sum() + y.sum() + z.sum() + branch


def _jaxpr():
    x, w = jnp.ones((3, 4)), jnp.ones((4, 2))
    return jax.make_jaxpr(_update)(x, w, jnp.ones((3, 3, 3, 4)), jnp.ones((2, 6, 6, 3)))


def test_live_products_are_counted_per_call_with_scans_unrolled_and_the_costlier_branch():
    conv = 2 * (2 * 6 * 6 * 4) * (3 * 3 * 3)  # outputs x multiply-adds per output
    matmul = 2 * (3 * 2) * 4
    scanned = 5 * 2 * (3 * 4) * 4
    assert perf_ceiling.jaxpr_flops(_jaxpr()) == conv + 2 * matmul + scanned + matmul
    products = {p.label: p for p, _ in perf_ceiling.distinct_products(_jaxpr())}
    assert products["dot float32[3, 4] * float32[4, 2]"].calls == 3  # twice flat, once in the cond
    assert products["dot float32[3, 4] * float32[4, 4]"].calls == 5
    assert products["conv float32[2, 6, 6, 3] * float32[3, 3, 3, 4]"].gflop_per_call == conv / 1e9
    assert len(products) == 3


def test_ceiling_arithmetic(monkeypatch):
    timed = [Product("a", calls=2, gflop_per_call=1.0, seconds_per_call=0.01),
             Product("b", calls=1, gflop_per_call=0.5, seconds_per_call=0.05)]  # fmt: skip
    monkeypatch.setattr(perf_ceiling, "time_products", lambda jaxpr, repeats: (timed, 1e-5))
    c = perf_ceiling.ceiling(None, update_seconds=0.14, peak_gflops=100.0)
    assert c["products_only_s"] == pytest.approx(0.07)
    assert c["products_gflop"] == pytest.approx(2.5)
    assert c["ceiling_utilisation"] == pytest.approx(2.5 / 0.07 / 100.0)
    assert c["products_share_of_update"] == pytest.approx(0.5)
    assert [p["product"] for p in c["top"]] == ["b", "a"]  # by time per update
    assert c["top"][1]["gflops"] == pytest.approx(100.0) and c["top"][0]["share"] == pytest.approx(5 / 7)
    assert c["product_calls"] == 3 and c["dispatch_s"] == 1e-5
    skipped = perf_ceiling.report_lines("train", {"skipped": perf_ceiling.SHARDS_NOT_BOUNDED})
    assert skipped == [f"  ceiling 'train': {perf_ceiling.SHARDS_NOT_BOUNDED}"]


def test_each_product_is_timed_alone():
    products, dispatch = perf_ceiling.time_products(_jaxpr(), repeats=2)
    assert len(products) == 3 and dispatch > 0
    assert all(p.seconds_per_call >= 0 for p in products)


def test_perf_agent_ceiling(tmp_path):
    out = tmp_path / "perf.json"
    code = cli.main(["perf", "agent", "--agent", "tests.helpers:TINY", "--suite", "toy", "--task", "reach",
                     "--updates", "2", "--policy-steps", "2", "--matmul", "64", "--ceiling",
                     "--json", str(out)])  # fmt: skip
    assert code == 0
    ceiling = json.loads(out.read_text())["streams"]["train"]["ceiling"]
    assert ceiling["distinct_products"] >= 2  # the forward matmul and its weight gradient
    assert ceiling["products_only_s"] >= 0 and len(ceiling["top"]) == ceiling["distinct_products"]


def test_model_flops_count_each_encoder_stage_as_its_plain_convolution():
    """`bench perf agent`'s two counts of a `ConvEncoder` (64 images 16x16x3, 5x5 kernels, 4 then 8 channels).
    Plain (the model's own): per stage 2 x outputs x 25 taps x channels in, at full resolution. As run on CPU
    (every stage `Conv2d.pooled`): per stage 2 x outputs x 9 taps x 4 x channels in, at half resolution with
    4 x channels out, plus the small products that fold the taps into the 3x3 kernels (under 1%)."""
    from agents.common import conv

    encoder = conv.ConvEncoder((16, 16, 3), depth=4, mults=(1, 2), kernel=5, key=jax.random.key(0))
    images = jnp.zeros((64, 16, 16, 3), jnp.uint8)
    plain = 2 * (64 * 16 * 16 * 4) * (25 * 3) + 2 * (64 * 8 * 8 * 8) * (25 * 4)
    pooled = 2 * (64 * 8 * 8 * 16) * (9 * 12) + 2 * (64 * 4 * 4 * 32) * (9 * 16)
    with conv.plain_encoder_stages():
        assert perf_ceiling.jaxpr_flops(jax.make_jaxpr(encoder)(images)) == plain
    live = perf_ceiling.jaxpr_flops(jax.make_jaxpr(encoder)(images))
    assert pooled <= live <= 1.01 * pooled  # the form this CPU runs, counted as it runs
    assert pooled / plain == pytest.approx(1.44)


def test_model_gflop_traces_the_update_anew_with_plain_stages():
    """`bench perf agent` counts the model's FLOPs from a second trace of the update it already traced (and
    compiled) as it runs; JAX would hand back that first trace for the same function object."""
    from types import SimpleNamespace

    from agents.common import conv
    from bench.perf_agent import model_gflop

    encoder = conv.ConvEncoder((16, 16, 3), depth=4, mults=(1, 2), kernel=5, key=jax.random.key(0))

    def keyed_update(dynamic, key, batch, counter, stream):
        return encoder(batch["image"]).sum() * dynamic

    compiled = SimpleNamespace(keyed_update=keyed_update, dynamic=jnp.float32(1.0), base_key=jax.random.key(1))
    batch = {"image": jnp.zeros((64, 16, 16, 3), jnp.uint8)}
    trace = jax.make_jaxpr(keyed_update, static_argnums=(4,))
    as_run = trace(compiled.dynamic, compiled.base_key, batch, np.int32(0), "train")  # the same arguments
    plain = 2 * (64 * 16 * 16 * 4) * (25 * 3) + 2 * (64 * 8 * 8 * 8) * (25 * 4)
    assert perf_ceiling.jaxpr_flops(as_run) > 1.4 * plain
    assert model_gflop(compiled, "train", batch) == pytest.approx(plain / 1e9)


def test_perf_agent_prints_the_model_flops_utilisation_only_where_it_differs():
    from bench.perf_agent import _model_utilisation_line

    stream = {"update_gflop_products": 12.0, "update_gflop_model": 10.0, "model_utilisation": 0.25}
    assert _model_utilisation_line(stream) == [
        "           model FLOPs (each encoder stage a plain convolution, then pooling) 10.0 GFLOP"
        " -> utilisation 25% by the model's FLOPs"]  # fmt: skip
    assert _model_utilisation_line({**stream, "update_gflop_model": 12.0}) == []


@pytest.mark.parametrize("parts", [1, 2])
def test_the_update_is_counted_as_it_runs_in_batch_shards(parts):
    """As batch shards (two CPU devices: tests/conftest.py) `bench perf agent` counts the update traced under
    `jax.shard_map`, whose body runs once per device at one part's shapes: the whole batch's FLOPs either way.
    64 images 16x16x3, 5x5 kernels, 16 then 32 channels (the second stage plain on CPU: `conv.pool_stage`)."""
    from types import SimpleNamespace

    from agents.common import conv
    from bench.perf_agent import model_gflop, update_as_run

    encoder = conv.ConvEncoder((16, 16, 3), depth=16, mults=(1, 2), kernel=5, key=jax.random.key(0))

    def keyed_update(dynamic, key, batch, counter, stream):
        features = encoder(batch["image"])
        return dynamic, {"loss": features.sum()}, {"first": features[:, 0]}

    compiled = SimpleNamespace(keyed_update=keyed_update, dynamic=jnp.float32(1.0), base_key=jax.random.key(1),
                               batch_shards=parts)  # fmt: skip
    batch = {"image": jnp.zeros((64, 16, 16, 3), jnp.uint8)}
    first_pooled = 2 * (64 * 8 * 8 * 64) * (9 * 12)
    second = 2 * (64 * 8 * 8 * 32) * (25 * 16)
    live = perf_ceiling.jaxpr_flops(update_as_run(compiled, "train", batch))
    assert first_pooled + second <= live <= 1.01 * (first_pooled + second)
    plain = 2 * (64 * 16 * 16 * 16) * (25 * 3) + 2 * (64 * 8 * 8 * 32) * (25 * 16)
    assert model_gflop(compiled, "train", batch) == pytest.approx(plain / 1e9)
