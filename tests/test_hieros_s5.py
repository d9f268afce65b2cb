"""Numerics of the resettable S5 layer (agents/hieros/s5.py) against the math of
/work/shared/reference/hieros_s5.md, with every reference value computed here independently (numpy loops,
scipy's matrix exponential), never copied from the layer's output."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from agents.hieros import s5


# Jitted construction and calls: eagerly, every small op of the scan compiles on its own (slow on CPU).
make_layer = eqx.filter_jit(s5.S5)
run = eqx.filter_jit(lambda layer, *args: layer(*args))
run_batch = eqx.filter_jit(lambda layer, *args: jax.vmap(layer)(*args))


@pytest.fixture(autouse=True)
def strict_promotion():
    with jax.numpy_dtype_promotion("strict"):
        yield


def _hippo_by_loops(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A and its normal part S written out element by element from the reference's definitions."""
    a = np.zeros((n, n))
    for i in range(n):
        for k in range(n):
            if i > k:
                a[i, k] = -math.sqrt(2 * i + 1) * math.sqrt(2 * k + 1)
            elif i == k:
                a[i, k] = -(i + 1)
    p = np.array([math.sqrt(i + 0.5) for i in range(n)])
    return a, a + np.outer(p, p)


def _random_resets(rng: np.random.Generator, length: int) -> np.ndarray:
    reset = rng.random(length) < 0.2
    reset[1] = reset[2] = True  # two consecutive episode starts (a one-step episode)
    return reset


def _with_parameters(layer: s5.S5, *, b_tilde=None, c_tilde=None, d=None, log_step=None, lam=None) -> s5.S5:
    """The layer with chosen parameter values (complex ones given as complex arrays)."""

    def pair(z):
        return jnp.asarray(np.stack([z.real, z.imag], -1), jnp.float32)

    if b_tilde is not None:
        layer = eqx.tree_at(lambda m: m.b, layer, pair(b_tilde))
    if c_tilde is not None:
        layer = eqx.tree_at(lambda m: m.c, layer, pair(c_tilde))
    if d is not None:
        layer = eqx.tree_at(lambda m: m.d, layer, jnp.asarray(d, jnp.float32))
    if log_step is not None:
        layer = eqx.tree_at(lambda m: m.log_step, layer, jnp.asarray(log_step, jnp.float32))
    if lam is not None:
        layer = eqx.tree_at(lambda m: (m.lambda_re, m.lambda_im), layer,
                            (jnp.asarray(lam.real, jnp.float32), jnp.asarray(lam.imag, jnp.float32)))  # fmt: skip
    return layer


def _loop(lambda_bar, b_bar, c_tilde, d, us, reset, x0, scale):
    """The recurrence written as a plain loop in complex128."""
    x = np.asarray(x0, np.complex128)
    xs, ys = [], []
    for t in range(len(us)):
        if reset[t]:
            x = np.zeros_like(x)
        x = lambda_bar * x + b_bar @ us[t]
        xs.append(x)
        ys.append(scale * np.real(c_tilde @ x) + d * us[t])
    return np.stack(ys), np.stack(xs)


def _complex(pair) -> np.ndarray:
    pair = np.asarray(pair, np.float64)
    return pair[..., 0] + 1j * pair[..., 1]


# ------------------------------------------------------------------------------------------------ HiPPO


def test_hippo_legs_matches_its_definition():
    for n in (1, 4, 7):
        a, normal = _hippo_by_loops(n)
        np.testing.assert_allclose(s5.hippo_legs(n), a, rtol=1e-14)
        np.testing.assert_allclose(s5.hippo_legs_normal(n), normal, rtol=1e-12, atol=1e-12)
    # hand values for n = 3
    r3, r5 = math.sqrt(3), math.sqrt(5)
    np.testing.assert_allclose(s5.hippo_legs(3), [[-1, 0, 0], [-r3, -2, 0], [-r5, -r5 * r3, -3]], rtol=1e-14)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_normal_part_has_diagonal_minus_half_and_skew_rest(n):
    normal = s5.hippo_legs_normal(n)
    np.testing.assert_allclose(np.diag(normal), -0.5, atol=1e-12)
    skew = normal + 0.5 * np.eye(n)
    np.testing.assert_allclose(skew, -skew.T, atol=1e-10)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_diagonalisation_reconstructs_the_normal_part(n):
    lam, v = s5.hippo_legs_diagonal(n)
    _, normal = _hippo_by_loops(n)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
    np.testing.assert_allclose(v.conj().T @ v, np.eye(n), atol=1e-10)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.conj().T, normal, atol=1e-9 * n)
    # conjugate symmetry: the second half is the first half conjugated (eigh's ascending order reversed)
    np.testing.assert_allclose(lam[n // 2 :], np.conj(lam[: n // 2])[::-1], atol=1e-9)


@pytest.mark.parametrize("conj_sym", [True, False])
def test_block_diagonal_init_rebuilds_block_diagonal_normal_part(conj_sym):
    blocks, block = 3, 6
    lam, v, vinv = s5.block_diagonal_hippo(blocks * block, blocks, conj_sym)
    _, normal = _hippo_by_loops(block)
    dense = scipy.linalg.block_diag(*[normal] * blocks)
    rebuilt = v @ np.diag(lam) @ vinv
    if conj_sym:
        assert lam.shape == (blocks * block // 2,) and v.shape == (blocks * block, blocks * block // 2)
        rebuilt = 2.0 * rebuilt.real  # the kept half plus its conjugate half
    np.testing.assert_allclose(rebuilt, dense, atol=1e-9)
    np.testing.assert_allclose(vinv, v.conj().T)


def test_layer_initialisation():
    layer = make_layer(5, 32, 4, dt_min=0.001, dt_max=0.1, key=jax.random.key(0))
    assert layer.state_size == 16 and layer.features == 5
    lam = np.asarray(layer.eigenvalues())
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-7)  # Re(Lambda) = -0.5 at init
    np.testing.assert_allclose(lam, np.tile(s5.hippo_legs_diagonal(8)[0][:4], 4), rtol=1e-6)
    step = np.exp(np.asarray(layer.log_step))
    assert np.all(step >= 0.001 * (1 - 1e-6)) and np.all(step <= 0.1 * (1 + 1e-6))
    # B~ = Vinv B for a real lecun-normal B (std 1/sqrt(N)): B = 2 Re(V B~) and Vinv B gives B~ back
    _, v, vinv = s5.block_diagonal_hippo(32, 4)
    b_real = 2.0 * (v @ _complex(layer.b)).real
    np.testing.assert_allclose(vinv @ b_real, _complex(layer.b), atol=1e-5)
    assert 0.13 < np.std(b_real) < 0.23


# ------------------------------------------------------------------------------------------ discretisation


def test_zoh_matches_matrix_exponential():
    rng = np.random.default_rng(0)
    p, h = 6, 3
    lam = -rng.uniform(0.05, 2.0, p) + 1j * rng.normal(0, 5, p)
    b = rng.normal(size=(p, h)) + 1j * rng.normal(size=(p, h))
    dt = np.exp(rng.uniform(math.log(1e-3), math.log(0.5), p))
    lambda_bar, b_bar = s5.discretize_zoh(jnp.asarray(lam, jnp.complex64), jnp.asarray(b, jnp.complex64),
                                          jnp.asarray(dt, jnp.float32))  # fmt: skip
    for i in range(p):
        # Van Loan: expm([[L dt, dt], [0, 0]]) = [[exp(L dt), int_0^dt exp(L s) ds], [0, 1]]
        aug = scipy.linalg.expm(np.array([[lam[i] * dt[i], dt[i]], [0.0, 0.0]]))
        np.testing.assert_allclose(lambda_bar[i], aug[0, 0], rtol=2e-6)
        np.testing.assert_allclose(b_bar[i], aug[0, 1] * b[i], rtol=2e-5, atol=1e-7)


def test_bilinear_matches_its_formula_and_the_trapezoid_rule():
    rng = np.random.default_rng(1)
    p, h = 5, 2
    lam = -rng.uniform(0.05, 2.0, p) + 1j * rng.normal(0, 5, p)
    b = rng.normal(size=(p, h)) + 1j * rng.normal(size=(p, h))
    dt = rng.uniform(1e-3, 0.3, p)
    lambda_bar, b_bar = s5.discretize_bilinear(jnp.asarray(lam, jnp.complex64), jnp.asarray(b, jnp.complex64),
                                               jnp.asarray(dt, jnp.float32))  # fmt: skip
    lambda_bar, b_bar = np.asarray(lambda_bar), np.asarray(b_bar)
    np.testing.assert_allclose(lambda_bar, (1 + dt * lam / 2) / (1 - dt * lam / 2), rtol=1e-5)
    np.testing.assert_allclose(b_bar, (dt / (1 - dt * lam / 2))[:, None] * b, rtol=1e-5)
    # trapezoid rule: (x1 - x0) / dt = Lambda (x0 + x1) / 2 + B u
    x0, u = rng.normal(size=p) + 0j, rng.normal(size=h)
    x1 = lambda_bar * x0 + b_bar @ u
    np.testing.assert_allclose((x1 - x0) / dt, lam * (x0 + x1) / 2 + b @ u, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conj_sym", [True, False])
def test_layer_equals_the_dense_real_hippo_system(conj_sym):
    """The diagonal layer built on (Lambda, V, Vinv) reproduces x' = A x + B u, y = C x + D u with the dense
    block-diagonal HiPPO normal part A, real B and C, ZOH via scipy's expm, resets included."""
    rng = np.random.default_rng(2)
    blocks, block, h, length, dt = 2, 4, 3, 30, 0.07
    n = blocks * block
    _, normal = _hippo_by_loops(block)
    a = scipy.linalg.block_diag(*[normal] * blocks)
    b, c, d = rng.normal(size=(n, h)), rng.normal(size=(h, n)), rng.normal(size=h)
    aug = np.zeros((n + h, n + h))
    aug[:n, :n], aug[:n, n:] = a * dt, b * dt
    aug = scipy.linalg.expm(aug)
    a_bar, b_bar = aug[:n, :n], aug[:n, n:]
    us, reset = rng.normal(size=(length, h)), _random_resets(rng, length)
    x, expected = np.zeros(n), []
    for t in range(length):
        x = (0.0 if reset[t] else 1.0) * (a_bar @ x) + b_bar @ us[t]
        expected.append(c @ x + d * us[t])

    lam, v, vinv = s5.block_diagonal_hippo(n, blocks, conj_sym)
    layer = make_layer(h, n, blocks, conj_sym=conj_sym, key=jax.random.key(0))
    log_step = np.full(lam.size, math.log(dt))
    layer = _with_parameters(layer, b_tilde=vinv @ b, c_tilde=c @ v, d=d, log_step=log_step)
    ys, _ = run(layer, jnp.asarray(us, jnp.float32), jnp.asarray(reset))
    np.testing.assert_allclose(ys, np.stack(expected), rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------------------------------- scan


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_parallel_scan_equals_loop_and_recurrent_step(discretization):
    rng = np.random.default_rng(3)
    batch, length, h = 3, 37, 4
    layer = make_layer(h, 16, 2, discretization=discretization, key=jax.random.key(1))
    us = rng.normal(size=(batch, length, h))
    resets = np.stack([_random_resets(rng, length) for _ in range(batch)])
    resets[0] = False  # one sequence without any reset
    resets[0, 1] = resets[0, 2] = False
    x0 = rng.normal(size=(batch, 8)) + 1j * rng.normal(size=(batch, 8))

    x0_jax = jnp.asarray(x0, jnp.complex64)
    ys, xs = run_batch(layer, jnp.asarray(us, jnp.float32), jnp.asarray(resets), x0_jax)

    lambda_bar, b_bar = (np.asarray(z, np.complex128) for z in layer.discretize())
    for i in range(batch):
        c_tilde, d = _complex(layer.c), np.asarray(layer.d)
        y_ref, x_ref = _loop(lambda_bar, b_bar, c_tilde, d, us[i], resets[i], x0[i], 2.0)
        np.testing.assert_allclose(ys[i], y_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xs[i], x_ref, rtol=1e-5, atol=1e-5)

    def run_steps(x, inputs):
        u, r = inputs
        return layer.step(x, u, r)

    x_last, ys_step = jax.jit(jax.vmap(lambda x, u, r: jax.lax.scan(run_steps, x, (u, r))))(
        jnp.asarray(x0, jnp.complex64), jnp.asarray(us, jnp.float32), jnp.asarray(resets)
    )
    np.testing.assert_allclose(ys_step, ys, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_last, xs[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("split", [1, 10, 17])
def test_chunks_with_a_carried_state_equal_one_sequence(split):
    rng = np.random.default_rng(4)
    length, h = 30, 3
    layer = make_layer(h, 8, 1, key=jax.random.key(2))
    us = jnp.asarray(rng.normal(size=(length, h)), jnp.float32)
    reset = _random_resets(rng, length)
    reset[0], reset[split] = True, split == 17  # a second chunk that starts an episode drops the carry
    reset = jnp.asarray(reset)
    ys, xs = run(layer, us, reset)
    ys1, xs1 = run(layer, us[:split], reset[:split])
    ys2, xs2 = run(layer, us[split:], reset[split:], xs1[-1])
    np.testing.assert_allclose(jnp.concatenate([ys1, ys2]), ys, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jnp.concatenate([xs1, xs2]), xs, rtol=1e-5, atol=1e-5)


def test_reset_at_the_first_step_drops_the_carried_state():
    layer = make_layer(2, 8, 1, key=jax.random.key(3))
    us = jax.random.normal(jax.random.key(4), (6, 2))
    carried = jnp.full((4,), 3.0 + 1.0j, jnp.complex64)
    reset = jnp.zeros(6, bool).at[0].set(True)
    fresh, _ = run(layer, us)
    dropped, _ = run(layer, us, reset, carried)
    kept, _ = run(layer, us, None, carried)
    np.testing.assert_allclose(dropped, fresh, rtol=1e-6)
    assert float(jnp.abs(kept - fresh).max()) > 1e-2


# ------------------------------------------------------------------------------------------- numerics


def test_mixed_precision_keeps_the_ssm_in_complex64():
    layer = make_layer(4, 16, 2, key=jax.random.key(5))
    us = jax.random.normal(jax.random.key(6), (20, 4))
    ys32, xs32 = run(layer, us)
    ys16, xs16 = run(layer, us.astype(jnp.bfloat16))
    assert ys16.dtype == jnp.bfloat16 and xs16.dtype == jnp.complex64
    x, y = eqx.filter_jit(layer.step)(layer.initial_state(), us[0].astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and x.dtype == jnp.complex64
    np.testing.assert_allclose(xs16, xs32, rtol=2e-2, atol=2e-2)  # only the input's rounding differs
    np.testing.assert_allclose(ys16.astype(jnp.float32), ys32, rtol=3e-2, atol=3e-2)


def test_eigenvalues_are_clipped_to_a_stable_recurrence():
    layer = make_layer(2, 8, 1, key=jax.random.key(7))
    layer = _with_parameters(layer, lam=np.array([0.3 + 1j, -2.0 + 0j, 0.0 + 5j, -1e-6 + 0j]))
    lam = np.asarray(layer.eigenvalues())
    np.testing.assert_allclose(lam.real, [-1e-4, -2.0, -1e-4, -1e-4], rtol=1e-6)
    np.testing.assert_allclose(lam.imag, [1.0, 0.0, 5.0, 0.0])
    lambda_bar, _ = layer.discretize()
    assert np.all(np.abs(np.asarray(lambda_bar)) < 1.0)
    unclipped = make_layer(2, 8, 1, clip_eigs=False, key=jax.random.key(7))
    unclipped = _with_parameters(unclipped, lam=np.array([0.3 + 1j] * 4))
    assert np.asarray(unclipped.eigenvalues()).real[0] == pytest.approx(0.3)


def test_gradients_reach_every_parameter_and_the_update_traces_once():
    layer = make_layer(3, 8, 2, key=jax.random.key(8))
    us = jax.random.normal(jax.random.key(9), (2, 12, 3))
    reset = jnp.zeros((2, 12), bool).at[:, 5].set(True)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def grads(model, us, reset):
        def loss(m):
            ys, xs = jax.vmap(m)(us, reset)
            return jnp.mean(ys**2) + jnp.mean(jnp.abs(xs[:, -1]) ** 2)

        return eqx.filter_grad(loss)(model)

    g = grads(layer, us, reset)
    g = grads(layer, us + 1.0, reset)
    for name in ("lambda_re", "lambda_im", "b", "c", "d", "log_step"):
        leaf = np.asarray(getattr(g, name))
        assert np.all(np.isfinite(leaf)) and np.abs(leaf).max() > 0, name


def test_ssm_parameter_mask_marks_lambda_b_and_step():
    model = (make_layer(2, 4, 1, key=jax.random.key(0)), jnp.ones(3))
    mask = s5.ssm_parameter_mask(model)
    layer_mask = mask[0]
    assert layer_mask.lambda_re and layer_mask.lambda_im and layer_mask.b and layer_mask.log_step
    assert not layer_mask.c and not layer_mask.d and mask[1] is False
    filtered = s5.ssm_parameter_mask(eqx.filter(model, eqx.is_inexact_array))
    assert jax.tree.structure(filtered) == jax.tree.structure(mask)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="even block size"):
        make_layer(2, 6, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="positive multiple of the blocks"):
        make_layer(2, 10, 4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="unknown discretization"):
        make_layer(2, 8, 1, discretization="euler", key=jax.random.key(0))
    layer = make_layer(2, 8, 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"3 features \(shape \(5, 3\)\), the layer 2"):
        layer(jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="reset has shape"):
        layer(jnp.zeros((5, 2)), jnp.zeros(4, bool))
