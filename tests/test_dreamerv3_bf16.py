"""bfloat16 compute (`compute_dtype`): the products run on bfloat16 operands, parameters and optimizer state stay
float32, and an update's losses stay close to float32's."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from agents.common.nets import BlockLinear, Linear, compute_dtype
from agents.dreamerv3 import SPEC
from tests.test_dreamerv3 import IMAGE_VECTOR_OBS, MIXED_ACT, make_batch, tiny_config


def _bf16(a) -> np.ndarray:
    """Round to bfloat16 and back (numpy, via ml_dtypes)."""
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def test_linear_products_take_bfloat16_operands_only_inside_the_context():
    layer = Linear(64, 32, key=jax.random.key(0))
    block = BlockLinear(64, 32, 4, key=jax.random.key(1))
    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    w = np.asarray(layer.weight)
    exact = x.astype(np.float64) @ w
    rounded = _bf16(x).astype(np.float64) @ _bf16(w)
    plain = np.asarray(layer(jnp.asarray(x)))
    np.testing.assert_allclose(plain, exact, rtol=1e-5, atol=1e-5)  # float32 outside the context
    with compute_dtype("bfloat16"):
        low = layer(jnp.asarray(x))
        low_block = block(jnp.asarray(x))
    assert low.dtype == jnp.float32 and low_block.dtype == jnp.float32
    # the product of the bfloat16-rounded operands (the CPU rounds its result to bfloat16 too: 3 digits)
    np.testing.assert_allclose(np.asarray(low), rounded, rtol=1e-2, atol=1e-2)
    assert np.abs(np.asarray(low) - exact).max() > 1e-4  # it did round: not the float32 product
    groups = _bf16(x).reshape(5, 4, 16)
    expected_block = np.einsum("bgi,gio->bgo", groups, _bf16(block.weight)).reshape(5, 32)
    np.testing.assert_allclose(np.asarray(low_block), expected_block, rtol=1e-2, atol=1e-2)


def test_unknown_compute_dtype_is_an_error():
    with pytest.raises(ValueError, match="compute_dtype 'float16': choose one of float32, bfloat16"):
        SPEC.make(tiny_config(compute_dtype="float16"), IMAGE_VECTOR_OBS, MIXED_ACT)


@pytest.mark.slow  # two compilations of the update: about 3 minutes on a loaded 2-core CPU
def test_bfloat16_update_keeps_float32_state_and_close_losses():
    batch = make_batch(SPEC.make(tiny_config(), IMAGE_VECTOR_OBS, MIXED_ACT), np.random.default_rng(0))
    results = {}
    for dtype in ("float32", "bfloat16"):
        agent = SPEC.make(tiny_config(compute_dtype=dtype), IMAGE_VECTOR_OBS, MIXED_ACT)
        state = agent.init(key=jax.random.key(0))
        new_state, metrics, _ = eqx.filter_jit(lambda s, b: agent.update(s, "train", b, key=jax.random.key(1)))(
            state, batch)  # fmt: skip
        results[dtype] = (new_state, jax.device_get(metrics))
    (state32, m32), (state16, m16) = results["float32"], results["bfloat16"]
    floats = jax.tree.leaves(eqx.filter((state16.nets, state16.opt_state, state16.slow), eqx.is_inexact_array))
    assert floats and {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}
    assert np.isfinite(m16["loss/total"])
    losses = [k for k in m32 if k.startswith("loss/")]
    assert losses
    for key in losses:
        np.testing.assert_allclose(m16[key], m32[key], rtol=0.05, atol=0.02, err_msg=key)
    assert m16["loss/total"] != m32["loss/total"]  # the bfloat16 products were really used
    # the updated parameters stay close too (the same first step, with gradients through bfloat16 products)
    p32, p16 = (jax.tree.leaves(eqx.filter(s.nets, eqx.is_inexact_array)) for s in (state32, state16))
    worst = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(p32, p16))
    assert worst < 1e-3
