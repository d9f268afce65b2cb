"""S5: a simplified state-space layer (Smith, Warrington & Linderman, ICLR 2023), resettable, in Equinox.

Self-contained (jax, numpy, equinox, jaxtyping); our stand-in for the missing `s5-jax` package. Facts and
constants: /work/shared/reference/hieros_s5.md ("S5 layer math").

Continuous model (one sequence, H input/output features, a diagonal complex state of size P):

    x'(t) = Lambda x(t) + B~ u(t),      y(t) = 2 Re(C~ x(t)) + D * u(t)      (conjugate-symmetric form)

Initialisation (HiPPO-LegS, diagonalised):
    A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k)          (HiPPO-LegS, size N)
    S = A + p p^T, p_n = sqrt(n + 1/2)                                        (its normal part)
    diag(S) = -1/2 and S + I/2 is skew-symmetric, so -i (S + I/2) is Hermitian: eigh gives real w and a
    unitary V, and S = V diag(-1/2 + i w) V^H, i.e. Lambda = -1/2 + i w.
    Conjugate symmetry: the eigenpairs come as (w, v), (-w, conj v); keep the half with w < 0 (eigh's first
    N/2), Vinv = V^H of that half, and output 2 Re(C~ x) instead of Re over the full state.
    Blocks: J copies of a HiPPO of size N = state_size / J on the block diagonal of Lambda, V and Vinv.
    B: lecun-normal on (N_total, H), B~ = Vinv B.   C: truncated normal with std 1/sqrt(N_total) for the
    real and imaginary parts of (H, N_total), C~ = C V.   D ~ N(0, 1).
    log_step ~ U[log dt_min, log dt_max] per state (one learned step size per state, dt = exp(log_step)).

Discretisation (per state p, dt_p = exp(log_step_p)):
    ZOH:      Lambda_bar = exp(Lambda dt),  B_bar = (Lambda_bar - 1) / Lambda * B~
    bilinear: Lambda_bar = (1 + dt Lambda / 2) / (1 - dt Lambda / 2),  B_bar = dt / (1 - dt Lambda / 2) * B~

Recurrence and its parallel form (reset r_t: step t starts an episode, the state before it counts as zero):
    x_t = Lambda_bar x_{t-1} [r_t = 0] + B_bar u_t,      y_t = 2 Re(C~ x_t) + D * u_t
    Elements e_t = (Lambda_bar, B_bar u_t, r_t) combine with the associative operator (earlier on the left)
        (A_i, b_i, r_i) o (A_j, b_j, r_j) = (A_j, b_j, 1)                        if r_j
                                          = (A_j A_i, A_j b_i + b_j, r_i)         otherwise
    and `jax.lax.associative_scan` returns every prefix composition, whose b-part is x_t. A state x_0 carried
    in from the previous chunk enters as an extra first element (1, x_0, 0); composing it with e_1 by hand
    gives b_1 + Lambda_bar x_0 [r_1 = 0], which is what `resettable_scan` puts in place of b_1 (same result,
    no extra step).

Numerics: the SSM (discretisation, scan, B and C products) always runs in complex64 / float32 with highest
matmul precision, whatever the dtype of the input; the output is cast back to the input's dtype.
Re(Lambda) is unconstrained during training; it is clipped to <= -1e-4 (reference, "Pitfalls") so the
recurrence never grows when it is stepped autoregressively. The reference optimiser gives Lambda, B and
log_step their own learning rate and no weight decay: `ssm_parameter_mask` selects them.

Networks take one sequence (Equinox style); batch with `jax.vmap`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Complex, Float, PRNGKeyArray, PyTree

SSM_COMPLEX = jnp.complex64
SSM_REAL = jnp.float32
LAMBDA_RE_MAX = -1e-4  # reference "Pitfalls": clip Re(Lambda) <= -1e-4 for autoregressive use
DISCRETIZATIONS = ("zoh", "bilinear")
_HIGHEST = jax.lax.Precision.HIGHEST
# jax's truncated-normal variance scaling: a standard normal truncated at +-2 has std 0.87962566103423978.
_TRUNCATED_STD = 0.87962566103423978


# ------------------------------------------------------------------------------------ HiPPO initialisation


def hippo_legs(size: int) -> np.ndarray:
    """HiPPO-LegS A (size, size), float64: -sqrt(2n+1) sqrt(2k+1) below the diagonal, -(n+1) on it."""
    q = np.sqrt(2.0 * np.arange(size) + 1.0)
    a = np.tril(np.outer(q, q), -1) + np.diag(np.arange(size) + 1.0)
    return -a


def hippo_legs_normal(size: int) -> np.ndarray:
    """The normal part S = A + p p^T of HiPPO-LegS, p_n = sqrt(n + 1/2): diag(S) = -1/2, S + I/2 skew."""
    p = np.sqrt(np.arange(size) + 0.5)
    return hippo_legs(size) + np.outer(p, p)


def hippo_legs_diagonal(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition S = V diag(Lambda) V^H of the normal HiPPO-LegS part (complex128).

    -i (S + I/2) is Hermitian; eigh gives ascending real w and unitary V; Lambda = -1/2 + i w. For an even
    size the second half of the eigenpairs are the complex conjugates of the first half, in reverse order.
    """
    skew = hippo_legs_normal(size) + 0.5 * np.eye(size)
    w, v = np.linalg.eigh(-1j * skew)
    return -0.5 + 1j * w, v


def block_diagonal_hippo(state_size: int, blocks: int, conj_sym: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(Lambda (P,), V (N, P), Vinv (P, N)) of J = `blocks` HiPPO-LegS blocks of size N / J, complex128.

    N = `state_size` is the size of the real system; P = N / 2 with conjugate symmetry (each block keeps the
    first half of its eigenpairs), else P = N. V maps the diagonal state to the HiPPO basis, Vinv = V^H back.
    """
    if state_size <= 0 or blocks <= 0 or state_size % blocks:
        raise ValueError(f"S5: state size {state_size} must be a positive multiple of the blocks {blocks}")
    block = state_size // blocks
    if conj_sym and block % 2:
        raise ValueError(f"S5: conjugate symmetry needs an even block size, got {state_size}/{blocks}={block}")
    lam, v = hippo_legs_diagonal(block)
    if conj_sym:
        lam, v = lam[: block // 2], v[:, : block // 2]
    vinv = v.conj().T
    eye = np.eye(blocks)
    return np.tile(lam, blocks), np.kron(eye, v), np.kron(eye, vinv)


# ---------------------------------------------------------------------------------------- discretisation


def discretize_zoh(lam: Complex[Array, " P"], b_tilde: Complex[Array, "P H"], step: Float[Array, " P"]) -> tuple[Complex[Array, " P"], Complex[Array, "P H"]]:  # fmt: skip
    """Zero-order hold: Lambda_bar = exp(Lambda dt), B_bar = (Lambda_bar - 1) / Lambda * B~ (per state)."""
    lam_dt = lam * step.astype(lam.dtype)
    lambda_bar = jnp.exp(lam_dt)
    return lambda_bar, ((lambda_bar - 1.0) / lam)[:, None] * b_tilde


def discretize_bilinear(lam: Complex[Array, " P"], b_tilde: Complex[Array, "P H"], step: Float[Array, " P"]) -> tuple[Complex[Array, " P"], Complex[Array, "P H"]]:  # fmt: skip
    """Bilinear: Lambda_bar = (1 + dt Lambda/2) / (1 - dt Lambda/2), B_bar = dt / (1 - dt Lambda/2) B~."""
    dt = step.astype(lam.dtype)
    inverse = 1.0 / (1.0 - 0.5 * dt * lam)
    return inverse * (1.0 + 0.5 * dt * lam), (inverse * dt)[:, None] * b_tilde


# ------------------------------------------------------------------------------------------------- scan


def _reset_compose(left, right):
    """(A_i, b_i, r_i) o (A_j, b_j, r_j), the earlier element on the left; a reset at j drops the left."""
    a_i, b_i, r_i = left
    a_j, b_j, r_j = right
    a = jnp.where(r_j, a_j, a_j * a_i)
    b = jnp.where(r_j, b_j, a_j * b_i + b_j)
    return a, b, r_i | r_j


def resettable_scan(
    lambda_bar: Complex[Array, " P"],
    bu: Complex[Array, "T P"],
    reset: Bool[Array, " T"],
    state: Complex[Array, " P"],
) -> Complex[Array, "T P"]:
    """All states x_t = Lambda_bar x_{t-1} [not r_t] + (B_bar u)_t of one sequence from x_0 = `state`."""
    reset = reset[:, None]
    # The carried state enters the first element (see the module docstring): b_1 + Lambda_bar x_0 [not r_1].
    first = bu[0] + jnp.where(reset[0], jnp.zeros_like(state), lambda_bar * state)
    bu = bu.at[0].set(first)
    lambdas = jnp.broadcast_to(lambda_bar, bu.shape)
    _, xs, _ = jax.lax.associative_scan(_reset_compose, (lambdas, bu, reset))
    return xs


# ------------------------------------------------------------------------------------------------- layer


def _truncated_normal(key: PRNGKeyArray, shape: tuple[int, ...], std: float) -> Float[Array, "..."]:
    """Normal truncated at +-2 std, rescaled so its standard deviation is `std` (jax's lecun_normal)."""
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, SSM_REAL) * (std / _TRUNCATED_STD)


def _as_complex(pair: Float[Array, "... 2"]) -> Complex[Array, "..."]:
    return jax.lax.complex(pair[..., 0], pair[..., 1])


def _as_pair(z: Complex[Array, "..."]) -> Float[Array, "... 2"]:
    return jnp.stack([jnp.real(z), jnp.imag(z)], -1).astype(SSM_REAL)


class S5(eqx.Module):
    """One S5 SSM: H features in and out, a diagonal complex state of P = state_size / 2 (conj. symmetric).

    `__call__` runs a whole sequence with the resettable parallel scan; `step` advances one step (acting,
    imagination). Both give the same outputs and states to float tolerance. States: complex64, shape (P,).
    """

    lambda_re: Float[Array, " P"]
    lambda_im: Float[Array, " P"]
    b: Float[Array, "P H 2"]  # B~ = Vinv B, real and imaginary parts
    c: Float[Array, "H P 2"]  # C~ = C V, real and imaginary parts
    d: Float[Array, " H"]
    log_step: Float[Array, " P"]
    discretization: str = eqx.field(static=True)
    conj_sym: bool = eqx.field(static=True)
    clip_eigs: bool = eqx.field(static=True)
    step_rescale: float = eqx.field(static=True)

    def __init__(
        self,
        features: int,
        state_size: int,
        blocks: int = 1,
        *,
        discretization: str = "zoh",
        conj_sym: bool = True,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        clip_eigs: bool = True,
        step_rescale: float = 1.0,
        key: PRNGKeyArray,
    ):
        """`features` H, `state_size` N (the real system's size; P = N / 2 complex states with `conj_sym`),
        `blocks` J HiPPO blocks, ZOH or bilinear, initial step sizes log-uniform in [dt_min, dt_max]."""
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"S5: unknown discretization {discretization!r}; choose from {DISCRETIZATIONS}")
        if not 0.0 < dt_min <= dt_max:
            raise ValueError(f"S5: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        lam, v, vinv = block_diagonal_hippo(state_size, blocks, conj_sym)
        key_b, key_c, key_d, key_step = jax.random.split(key, 4)
        # lecun-normal B on (N, H): jax's fan-in axis is the first one here, so std = 1 / sqrt(N).
        b = _truncated_normal(key_b, (state_size, features), 1.0 / math.sqrt(state_size))
        c = _as_complex(_truncated_normal(key_c, (features, state_size, 2), 1.0 / math.sqrt(state_size)))
        b_tilde = jnp.matmul(jnp.asarray(vinv, SSM_COMPLEX), b.astype(SSM_COMPLEX), precision=_HIGHEST)
        c_tilde = jnp.matmul(c, jnp.asarray(v, SSM_COMPLEX), precision=_HIGHEST)
        self.lambda_re = jnp.asarray(lam.real, SSM_REAL)
        self.lambda_im = jnp.asarray(lam.imag, SSM_REAL)
        self.b = _as_pair(b_tilde)
        self.c = _as_pair(c_tilde)
        self.d = jax.random.normal(key_d, (features,), SSM_REAL)
        self.log_step = jax.random.uniform(
            key_step, (lam.size,), SSM_REAL, math.log(dt_min), math.log(dt_max)
        )
        self.discretization = discretization
        self.conj_sym = conj_sym
        self.clip_eigs = clip_eigs
        self.step_rescale = float(step_rescale)

    @property
    def features(self) -> int:
        return self.d.shape[0]

    @property
    def state_size(self) -> int:
        """P, the number of complex states (N / 2 with conjugate symmetry)."""
        return self.lambda_re.shape[0]

    def initial_state(self) -> Complex[Array, " P"]:
        return jnp.zeros((self.state_size,), SSM_COMPLEX)

    def eigenvalues(self) -> Complex[Array, " P"]:
        """Lambda, with Re(Lambda) clipped to <= -1e-4 when `clip_eigs` (as used by every forward pass)."""
        real = jnp.minimum(self.lambda_re, LAMBDA_RE_MAX) if self.clip_eigs else self.lambda_re
        return jax.lax.complex(real, self.lambda_im)

    def discretize(self) -> tuple[Complex[Array, " P"], Complex[Array, "P H"]]:
        """(Lambda_bar, B_bar) for the learned step sizes dt = step_rescale * exp(log_step)."""
        step = self.step_rescale * jnp.exp(self.log_step)
        fn = discretize_zoh if self.discretization == "zoh" else discretize_bilinear
        return fn(self.eigenvalues(), _as_complex(self.b), step)

    def _output(self, xs: Complex[Array, "*T P"], us: Float[Array, "*T H"]) -> Float[Array, "*T H"]:
        cx = jnp.matmul(xs, _as_complex(self.c).T, precision=_HIGHEST)
        scale = 2.0 if self.conj_sym else 1.0
        return scale * jnp.real(cx) + self.d * us

    def _check(self, u: Array, name: str) -> None:
        if u.shape[-1] != self.features:
            raise ValueError(f"S5: {name} has {u.shape[-1]} features (shape {u.shape}), the layer {self.features}")  # fmt: skip

    def __call__(
        self,
        inputs: Float[Array, "T H"],
        reset: Bool[Array, " T"] | None = None,
        state: Complex[Array, " P"] | None = None,
    ) -> tuple[Float[Array, "T H"], Complex[Array, "T P"]]:
        """Outputs y (T, H) in the input's dtype and the states x (T, P) of one sequence (parallel scan).

        `reset[t]` marks step t as an episode start (the state before it is dropped); `state` is the state
        carried in from the previous chunk (default zero). The carry for the next chunk is `states[-1]`.
        """
        if inputs.ndim != 2:
            raise ValueError(f"S5: expected one sequence (T, {self.features}), got shape {inputs.shape}")
        self._check(inputs, "the input")
        length = inputs.shape[0]
        reset = jnp.zeros((length,), bool) if reset is None else reset
        if reset.shape != (length,):
            raise ValueError(f"S5: reset has shape {reset.shape}, the input {inputs.shape}")
        state = self.initial_state() if state is None else state.astype(SSM_COMPLEX)
        us = inputs.astype(SSM_REAL)
        lambda_bar, b_bar = self.discretize()
        bu = jnp.matmul(us.astype(SSM_COMPLEX), b_bar.T, precision=_HIGHEST)
        xs = resettable_scan(lambda_bar, bu, reset.astype(bool), state)
        return self._output(xs, us).astype(inputs.dtype), xs

    def step(
        self, state: Complex[Array, " P"], inputs: Float[Array, " H"], reset: Bool[Array, ""] | bool = False
    ) -> tuple[Complex[Array, " P"], Float[Array, " H"]]:
        """One recurrent step: (x_t, y_t) from x_{t-1} and u_t; `reset` drops x_{t-1} (episode start)."""
        self._check(inputs, "the input")
        u = inputs.astype(SSM_REAL)
        lambda_bar, b_bar = self.discretize()
        state = jnp.where(reset, jnp.zeros_like(state), state.astype(SSM_COMPLEX))
        x = lambda_bar * state + jnp.matmul(b_bar, u.astype(SSM_COMPLEX), precision=_HIGHEST)
        return x, self._output(x, u).astype(inputs.dtype)


def ssm_parameter_mask(tree: PyTree) -> PyTree:
    """A bool pytree like `tree`: True at every S5 layer's Lambda, B and log_step, False elsewhere.

    The reference optimiser gives these their own learning rate and no weight decay (use with
    `optax.masked` / `optax.multi_transform`); pass the model or `eqx.filter(model, eqx.is_inexact_array)`.
    """

    def mark(node):
        if not isinstance(node, S5):
            return jax.tree.map(lambda _: False, node)
        mask = jax.tree.map(lambda _: False, node)
        return eqx.tree_at(lambda m: (m.lambda_re, m.lambda_im, m.b, m.log_step), mask, (True,) * 4)

    return jax.tree.map(mark, tree, is_leaf=lambda x: isinstance(x, S5))
