"""The latent-dynamics contract that the DreamerV3 agent learns, filters and imagines with.

The DreamerV3 agent (agents/dreamerv3/agent.py) owns the encoder, decoder, reward/continue heads, actor,
critic, optimizer and the update. It talks to its latent dynamics only through `AbstractDynamics`, so a
variant (THICK's C-RSSM, VSG's gated RSSM, SVSG) plugs in a new dynamics class and reuses everything else:

    from agents.dreamerv3 import DreamerV3Config, make_agent
    SPEC = AgentSpec(
        name="vsg",
        config_cls=VSGConfig,                       # a frozen dataclass that extends DreamerV3Config
        make=functools.partial(make_agent, make_dynamics=make_gated_rssm),
        presets=("agents.dreamerv3:presets.yaml", "agents.vsg:presets.yaml"),
    )

`make_dynamics(config, token_size, action_size, *, key) -> AbstractDynamics` receives the whole agent config
(so a variant reads its own fields) and must return a module whose arrays are all trainable: the agent
optimises every inexact array of the dynamics together with its other networks (one LaProp optimizer).

Loss terms: `losses` returns a dict of named (B, T) terms. The agent merges them with its own terms (rec, rew,
con, policy, value, repval) and weights every term by the field of the same name in `config.loss_scales`;
the key sets must match exactly (a missing or extra scale is an error naming the keys). A variant therefore
extends the loss-scale dataclass with its extra fields (e.g. `sparse`, `coarse_dec`, `gate`).

Latents are dicts of arrays with a leading batch shape; every method works on one batch (networks inside
take one example and are vmapped, Equinox style). Shapes below: B batch, T time, E token size, A action size
(the concatenation of one-hot discrete and continuous action vectors), F feature size.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from agents.common import distributions as dists

Latent = dict[str, Array]


class WorldModelData(NamedTuple):
    """What the dynamics' own loss terms may use, all aligned on (B, T).

    `obs` holds the raw sensor arrays (images uint8, vectors float32) of the trained steps, `reward` the raw
    rewards, `cont` the continue targets with the discount folded in ((1 - terminal) * (1 - 1/horizon)),
    `prev_actions[:, t]` the action that led to step t (zero at episode starts), `actions[:, t]` the action
    taken after step t.
    """

    tokens: Float[Array, "B T E"]
    obs: dict[str, Array]
    reward: Float[Array, "B T"]
    cont: Float[Array, "B T"]
    is_first: Bool[Array, "B T"]
    is_terminal: Bool[Array, "B T"]
    prev_actions: Float[Array, "B T A"]
    actions: Float[Array, "B T A"]


class AbstractDynamics(eqx.Module):
    """Latent dynamics: posterior filtering over observed sequences, prior steps in imagination.

    Implementations are final classes (Equinox abstract/final pattern). Conventions:

    * A *latent* is the recurrent state as a dict of arrays (e.g. RSSM: `deter` (B, D), `stoch` (B, S, K)).
      The same keys come out of `initial`, `observe` (the last state) and `imagine_step`; the agent stores
      them in replay (`replay_context`) and in the policy carry.
    * `observe` also returns per-step *posteriors* (the latent keys plus whatever statistics `losses` needs,
      e.g. `logits`) and *priors* (whatever `losses` needs), all shaped (B, T, ...).
    * `features` maps a latent (any leading shape; extra keys such as posterior `logits` are ignored) to
      the flat vector the heads, actor and critic read.
    * `initial` may only use static fields: the agent calls it on a shapes-only copy of the module
      (`eqx.filter_eval_shape`) to build the policy carry without the state.
    * Stored latents travel through replay as float16 (halving memory; upstream stores bfloat16) and come
      back as float32.
    """

    feature_size: eqx.AbstractVar[int]

    @abc.abstractmethod
    def initial(self, batch_size: int) -> Latent:
        """The latent at episode start for `batch_size` sequences (B, ...)."""

    @abc.abstractmethod
    def observe(
        self,
        latent: Latent,
        tokens: Float[Array, "B T E"],
        prev_actions: Float[Array, "B T A"],
        is_first: Bool[Array, "B T"],
        *,
        key: PRNGKeyArray,
    ) -> tuple[Latent, Latent, Latent]:
        """Filter a sequence: returns (last latent (B, ...), posteriors (B, T, ...), priors (B, T, ...)).

        Step t starts from the latent after step t-1 (`latent` for t = 0) and the action `prev_actions[:, t]`
        that led to it. Where `is_first[:, t]`, the latent is reset to `initial` and the action to zero
        before the step. Loops over time are a `lax.scan`.
        """

    @abc.abstractmethod
    def imagine_step(self, latent: Latent, action: Float[Array, "B A"], *, key: PRNGKeyArray) -> Latent:
        """One prior step: the next latent (B, ...) given the current latent and the action taken in it."""

    @abc.abstractmethod
    def features(self, latent: Latent) -> Float[Array, "... F"]:
        """Flat features of a latent with any leading shape (..., F) for heads, actor and critic."""

    @abc.abstractmethod
    def decoder_inputs(self, latent: Latent) -> tuple[Float[Array, "... W"], Float[Array, "... N"]]:
        """The two inputs of the image decoder: (wide, narrow) with any leading shape.

        The DreamerV3 image decoder projects the wide part (RSSM: `deter`) block-wise into a 4x4 feature map
        and the narrow part (RSSM: flattened `stoch`) through an MLP, then sums them. A dynamics without a
        deterministic path (SVSG) returns its state as the wide part and a (..., 0) array as the narrow part.
        """

    @abc.abstractmethod
    def losses(
        self, posteriors: Latent, priors: Latent, data: WorldModelData, *, key: PRNGKeyArray
    ) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:
        """The dynamics' own loss terms (B, T) (RSSM: `dyn`, `rep`) and scalar metrics to log."""

    @abc.abstractmethod
    def critic_targets(
        self,
        trajectory: Latent,
        returns: Float[Array, "N H"],
        reward: Float[Array, "N H+1"],
        cont: Float[Array, "N H+1"],
        *,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "N H"], dict[str, Float[Array, "N H"]], dict[str, Array]]:
        """Hook on the critic's regression targets in imagination (THICK Dreamer mixes long-horizon values in).

        `trajectory` holds the imagined latents (N, H+1, ...) from N = B*T start states, `returns` the
        lambda returns of the online critic for the first H steps, `reward`/`cont` the predicted rewards and
        continue flags. Returns (critic targets (N, H), extra loss terms (N, H) that the agent averages over
        H into (B, T) terms, scalar metrics). Plain dynamics return `(returns, {}, {})`.
        """


# ------------------------------------------------------------------ shared by the categorical-latent dynamics


def reset_at_first(latent: Latent, action: Float[Array, "B A"], first: Bool[Array, " B"]) -> tuple[Latent, Array]:
    """Zero every latent array and the previous action of the sequences that start a new episode."""
    keep = (~first).astype(jnp.float32)

    def mask(x):
        return x * keep.reshape(-1, *([1] * (x.ndim - 1)))

    return {k: mask(v) for k, v in latent.items()}, mask(action)


def categorical_features(latent: Latent) -> Float[Array, "... F"]:
    """`deter` (..., D) and the flattened one-hot `stoch` (..., S, K) side by side: (..., D + S*K)."""
    return jnp.concatenate(categorical_decoder_inputs(latent), -1)


def categorical_decoder_inputs(latent: Latent) -> tuple[Float[Array, "... D"], Float[Array, "... N"]]:
    """(wide, narrow) decoder inputs of a `deter` + categorical `stoch` latent: `deter` and flat `stoch`."""
    stoch = latent["stoch"]
    return latent["deter"], stoch.reshape(*stoch.shape[:-2], stoch.shape[-2] * stoch.shape[-1])


def categorical_kl_terms(
    post: Float[Array, "B T S K"], prior: Float[Array, "B T S K"], free_nats: float
) -> tuple[dict[str, Float[Array, "B T"]], dict[str, Array]]:
    """DreamerV3's dynamics and representation losses (KL with stop-gradients, free nats) and their metrics."""
    sg = jax.lax.stop_gradient
    dyn = dists.categorical_kl(sg(post), prior).sum(-1)
    rep = dists.categorical_kl(post, sg(prior)).sum(-1)
    metrics = {
        "dyn_kl": dyn.mean(),
        "rep_kl": rep.mean(),
        "prior_ent": dists.categorical_entropy(prior).sum(-1).mean(),
        "post_ent": dists.categorical_entropy(post).sum(-1).mean(),
    }
    return {"dyn": jnp.maximum(dyn, free_nats), "rep": jnp.maximum(rep, free_nats)}, metrics
