"""S5WM, Hieros' world model: categorical latents whose dynamics run through a stack of resettable S5 layers.

Facts: /work/shared/reference/hieros_s5.md ("S5WM"). Shapes: T time, E token (encoder embedding) size,
A action size, S x K the categorical latent (32 x 32), M the model width (256), L = 2 * blocks S5 layers,
P their complex state size, D the deterministic feature size (256).

    posterior   q(z_t | o_t)   = Linear(E -> hidden, no bias) -> LayerNorm -> SiLU -> Linear -> S x K logits
                                 (the current frame only; no recurrent input)
    input       e_t  = Linear(no bias) -> LayerNorm -> SiLU of [flat z_{t-1}, a_{t-1}]           (M)
                       z_{t-1} is the learned initial z at an episode start (is_first), a_{t-1} zero there;
                       a_{t-1} is the action taken after o_{t-1} (DreamerV3's pairing; upstream is off by one)
    sequence    each half block: x + Dropout(GELU(Linear(S5(LayerNorm(x)))))   (L halves, resets at is_first)
    prior       p(z_t | z_<t, a_<t) = Linear(M -> D) -> Linear(no bias) -> LayerNorm -> SiLU -> Linear
    deter_t     = symlog(Linear(Re(all layers' states at t)))          (D, upstream's "state as deter" feature)

Both categoricals mix in 1% uniform. Features for heads and actor: [flat z_t, deter_t]. The learned initial z
is the straight-through mode of the prior head at GELU(w), w a learned (D,) vector starting at zero (as
upstream's learned initial state).

Training (`observe`) runs every S5 layer with the parallel scan over the whole sequence; imagination and
acting (`step`, `imagine_step`) advance one step with the layers' recurrent form. For the same inputs both
give the same priors and features (tested). Networks take one sequence / one example; batch with `jax.vmap`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Complex, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common.nets import Linear, activation
from agents.hieros.s5 import S5

sg = jax.lax.stop_gradient
NORM_EPS = 1e-3  # upstream's LayerNorm eps in the input, posterior and prior layers


def _dropout(x: Array, rate: float, key: PRNGKeyArray | None) -> Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class NormedDense(eqx.Module):
    """Linear (no bias) -> LayerNorm -> activation on one example, as upstream's input and output layers."""

    linear: Linear
    norm: eqx.nn.LayerNorm
    act: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, act: str = "silu", *, key: PRNGKeyArray):
        activation(act)
        self.linear = Linear(in_size, out_size, bias=False, key=key)
        self.norm = eqx.nn.LayerNorm(out_size, eps=NORM_EPS)
        self.act = act

    def __call__(self, x: Float[Array, " i"]) -> Float[Array, " o"]:
        return activation(self.act)(self.norm(self.linear(x)))


class S5Half(eqx.Module):
    """One half of Hieros' double S5 block: x + Dropout(act(Linear(S5(LayerNorm(x)))))."""

    norm: eqx.nn.LayerNorm
    ssm: S5
    linear: Linear
    act: str = eqx.field(static=True)
    dropout: float = eqx.field(static=True)

    def __init__(self, width: int, state_size: int, blocks: int, *, act: str = "gelu", dropout: float = 0.0,
                 discretization: str = "zoh", dt_min: float = 0.001, dt_max: float = 0.1, key: PRNGKeyArray):  # fmt: skip
        activation(act)
        key_ssm, key_linear = jax.random.split(key)
        self.norm = eqx.nn.LayerNorm(width)
        self.ssm = S5(width, state_size, blocks, discretization=discretization, dt_min=dt_min, dt_max=dt_max,
                      key=key_ssm)  # fmt: skip
        self.linear = Linear(width, width, bias=False, key=key_linear)
        self.act = act
        self.dropout = dropout

    def __call__(self, x: Float[Array, "T M"], reset: Bool[Array, " T"], state: Complex[Array, " P"], *,
                 key: PRNGKeyArray | None = None) -> tuple[Float[Array, "T M"], Complex[Array, "T P"]]:  # fmt: skip
        """The whole sequence (parallel scan): outputs (T, M) and the layer's states (T, P)."""
        y, states = self.ssm(jax.vmap(self.norm)(x), reset, state)
        y = activation(self.act)(jax.vmap(self.linear)(y))
        return x + _dropout(y, self.dropout, key), states

    def step(self, state: Complex[Array, " P"], x: Float[Array, " M"], reset: Bool[Array, ""] | bool = False, *,
             key: PRNGKeyArray | None = None) -> tuple[Complex[Array, " P"], Float[Array, " M"]]:  # fmt: skip
        """One recurrent step: (the new state (P,), the output (M,))."""
        state, y = self.ssm.step(state, self.norm(x), reset)
        y = activation(self.act)(self.linear(y))
        return state, x + _dropout(y, self.dropout, key)


class S5WorldModel(eqx.Module):
    """The S5WM dynamics (see the module docstring). A carry is {"states": (L, P) complex64, "stoch": (S, K)}:
    every layer's S5 state and the last latent z, which the next step pairs with the next action."""

    post_hidden: NormedDense
    post_out: Linear
    input_layer: NormedDense
    halves: tuple[S5Half, ...]
    seq_out: Linear
    prior_hidden: NormedDense
    prior_out: Linear
    state_out: Linear
    initial_deter: Float[Array, " D"]
    stoch: int = eqx.field(static=True)
    classes: int = eqx.field(static=True)
    unimix: float = eqx.field(static=True)

    def __init__(self, token_size: int, action_size: int, *, stoch: int = 32, classes: int = 32,
                 hidden: int = 256, width: int = 256, deter: int = 256, blocks: int = 4, state_size: int = 128,
                 ssm_blocks: int = 4, act: str = "silu", block_act: str = "gelu", dropout: float = 0.0,
                 unimix: float = 0.01, key: PRNGKeyArray):  # fmt: skip
        """Sizes from the reference: z 32 x 32, hidden/width/deter 256, 4 double blocks = 8 S5 layers with
        state size N = 128 (64 complex states with conjugate symmetry) in J = 4 HiPPO blocks, ZOH."""
        keys = jax.random.split(key, 7 + 2 * blocks)
        flat = stoch * classes
        self.post_hidden = NormedDense(token_size, hidden, act, key=keys[0])
        self.post_out = Linear(hidden, flat, key=keys[1])
        self.input_layer = NormedDense(flat + action_size, width, act, key=keys[2])
        self.halves = tuple(
            S5Half(width, state_size, ssm_blocks, act=block_act, dropout=dropout, key=keys[7 + i])
            for i in range(2 * blocks)
        )
        self.seq_out = Linear(width, deter, key=keys[3])
        self.prior_hidden = NormedDense(deter, hidden, act, key=keys[4])
        self.prior_out = Linear(hidden, flat, key=keys[5])
        self.state_out = Linear(2 * blocks * self.halves[0].ssm.state_size, deter, key=keys[6])
        self.initial_deter = jnp.zeros((deter,), jnp.float32)
        self.stoch, self.classes, self.unimix = stoch, classes, unimix

    # ------------------------------------------------------------------------------------------ pieces

    @property
    def feature_size(self) -> int:
        return self.stoch * self.classes + self.initial_deter.shape[0]

    def posterior_logits(self, token: Float[Array, " E"]) -> Float[Array, "S K"]:
        """Unimixed log-probabilities of q(z_t | o_t) from the current frame's token only."""
        logits = self.post_out(self.post_hidden(token)).reshape(self.stoch, self.classes)
        return dists.unimix_logits(logits, self.unimix)

    def _prior_head(self, seq: Float[Array, " D"]) -> Float[Array, "S K"]:
        logits = self.prior_out(self.prior_hidden(seq)).reshape(self.stoch, self.classes)
        return dists.unimix_logits(logits, self.unimix)

    def _deter(self, states: Complex[Array, "L P"]) -> Float[Array, " D"]:
        return dists.symlog(self.state_out(jnp.real(states).reshape(-1)))

    def initial_stoch(self) -> Float[Array, "S K"]:
        """The learned z before an episode: the prior head's mode at GELU(w), straight-through."""
        log_probs = self._prior_head(jax.nn.gelu(self.initial_deter))
        probs = jnp.exp(log_probs)
        mode = jax.nn.one_hot(jnp.argmax(log_probs, -1), self.classes, dtype=jnp.float32)
        return mode + probs - sg(probs)

    def initial(self) -> dict[str, Array]:
        """The carry before the first step of an episode."""
        states = jnp.stack([half.ssm.initial_state() for half in self.halves])
        return {"states": states, "stoch": self.initial_stoch()}

    def _embed(self, stoch: Float[Array, "S K"], action: Float[Array, " A"]) -> Float[Array, " M"]:
        action = action / sg(jnp.maximum(1.0, jnp.abs(action)))  # DreamerV3's action rescaling
        return self.input_layer(jnp.concatenate([stoch.reshape(-1), action]))

    def features(self, stoch: Float[Array, "*b S K"], deter: Float[Array, "*b D"]) -> Float[Array, "*b F"]:
        return jnp.concatenate([stoch.reshape(*stoch.shape[:-2], -1), deter], -1)

    # ----------------------------------------------------------------------------------------- training

    def observe(
        self,
        carry: dict[str, Array],
        tokens: Float[Array, "T E"],
        prev_actions: Float[Array, "T A"],
        is_first: Bool[Array, " T"],
        *,
        key: PRNGKeyArray,
        dropout_key: PRNGKeyArray | None = None,
    ) -> tuple[dict[str, Array], dict[str, Array], dict[str, Array]]:
        """Filter one sequence with the parallel scan: (last carry, posteriors, priors).

        `prev_actions[t]` is the action that led to step t (taken after o_{t-1}); `carry` is the state after
        the previous chunk (`initial()` for a fresh one). Posteriors: `stoch` (T, S, K) samples, `logits`,
        `deter` (T, D), `states` (T, L, P); priors: `logits` (T, S, K) and `deter`.
        """
        length = tokens.shape[0]
        if prev_actions.shape[0] != length or is_first.shape != (length,):
            raise ValueError(f"S5WM.observe: tokens {tokens.shape}, prev_actions {prev_actions.shape} and "
                             f"is_first {is_first.shape} must share the time axis")  # fmt: skip
        post_logits = jax.vmap(self.posterior_logits)(tokens)
        stoch = dists.sample_onehot(key, post_logits)
        # z_{t-1} for step t: the carried z at t = 0, the learned initial z at episode starts.
        prev_stoch = jnp.concatenate([carry["stoch"][None], stoch[:-1]])
        first = is_first[:, None, None]
        prev_stoch = jnp.where(first, self.initial_stoch()[None], prev_stoch)
        prev_actions = jnp.where(is_first[:, None], jnp.zeros_like(prev_actions), prev_actions)
        x = jax.vmap(self._embed)(prev_stoch, prev_actions)
        layers = len(self.halves)
        keys = [None] * layers if dropout_key is None else list(jax.random.split(dropout_key, layers))
        layer_states = []
        for half, state, layer_key in zip(self.halves, carry["states"], keys):
            x, states = half(x, is_first, state, key=layer_key)
            layer_states.append(states)
        states = jnp.stack(layer_states, 1)  # (T, L, P)
        prior_logits = jax.vmap(self._prior_head)(jax.vmap(self.seq_out)(x))
        deter = jax.vmap(self._deter)(states)
        carry = {"states": states[-1], "stoch": stoch[-1]}
        # per-step states: the carries imagination starts from (with `stoch`)
        post = {"stoch": stoch, "logits": post_logits, "deter": deter, "states": states}
        prior = {"logits": prior_logits, "deter": deter}
        return carry, post, prior

    # ------------------------------------------------------------------------------ acting, imagination

    def step(
        self,
        states: Complex[Array, "L P"],
        prev_stoch: Float[Array, "S K"],
        prev_action: Float[Array, " A"],
        is_first: Bool[Array, ""] | bool = False,
    ) -> tuple[Complex[Array, "L P"], Float[Array, "S K"], Float[Array, " D"]]:
        """One recurrent step of the sequence model: (new states, prior log-probs of z_t, deter_t).

        `is_first` starts an episode: the states are dropped, z_{t-1} is the learned initial z and the
        action is zero (the same substitutions `observe` makes).
        """
        prev_stoch = jnp.where(is_first, self.initial_stoch(), prev_stoch)
        prev_action = jnp.where(is_first, jnp.zeros_like(prev_action), prev_action)
        x = self._embed(prev_stoch, prev_action)
        new_states = []
        for half, state in zip(self.halves, states):
            state, x = half.step(state, x, is_first)
            new_states.append(state)
        new_states = jnp.stack(new_states)
        return new_states, self._prior_head(self.seq_out(x)), self._deter(new_states)

    def imagine_step(
        self, carry: dict[str, Array], action: Float[Array, " A"], *, key: PRNGKeyArray
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        """One imagined step after `action` in the carry's latent: (new carry, {stoch, logits, deter})."""
        states, logits, deter = self.step(carry["states"], carry["stoch"], action)
        stoch = dists.sample_onehot(key, logits)
        return {"states": states, "stoch": stoch}, {"stoch": stoch, "logits": logits, "deter": deter}
