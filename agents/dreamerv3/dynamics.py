"""The latent-dynamics extension point of the DreamerV3 agent.

The DreamerV3 agent (agent.py) owns the encoder, decoder, reward/continue heads, actor, critic, optimizer
and the update. It talks to its latent dynamics only through `AbstractDynamics`, so a variant (THICK's
C-RSSM, VSG's gated RSSM, SVSG) plugs in a dynamics class and reuses everything else:

    SPEC = AgentSpec(
        name="vsg",
        config_cls=VSGConfig,                       # a frozen dataclass that extends DreamerV3Config
        make=functools.partial(make_agent, make_dynamics=make_gated_rssm),
        presets=(...),
    )

`make_dynamics(config, obs_space, layout, token_size, *, key) -> AbstractDynamics` receives the whole agent
config (so a variant reads its own fields), the observation space, the action layout (`layout.size` is the
action vector size A) and the encoder's token size E. Every array of the returned module is trained: the
agent optimises every inexact array of the dynamics together with its other networks (one LaProp optimizer).

Loss terms: `losses` returns a dict of named (B, T) terms. The agent merges them with its own terms (rec, rew,
con, policy, value, repval) and weights every term by the field of the same name in `config.loss_scales`;
the key sets must match exactly (a missing or extra scale is an error naming the keys). A variant therefore
extends the loss-scale dataclass with its extra fields (e.g. `gate`, `coarse_rec`).

Latents are dicts of arrays with a leading batch shape; every method works on one batch (networks inside
take one example and are vmapped, Equinox style). Shapes below: B batch, T time, E token size, A action size
(the concatenation of one-hot discrete and continuous action vectors), F feature size.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar, NamedTuple, Protocol

import equinox as eqx
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from agents.common.actions import ActionLayout
from agents.common.latents import Latent as Latent
from bench.spaces import Space


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
    * Stored latents travel through replay as float16 (halving memory; upstream stores bfloat16) and come
      back as float32.
    """

    feature_size: eqx.AbstractVar[int]
    # A dynamics that reads rewards (TSSM's reward tokens) sets this: the agent then appends the step's raw
    # reward (the one received with the observation) as the last column of the tokens passed to `observe`.
    observes_reward: ClassVar[bool] = False
    # Latent keys needed only to carry the state forward (TSSM's key/value window): `act` does not store
    # them in replay and imagined trajectories do not keep them (features never read them).
    carry_only: ClassVar[tuple[str, ...]] = ()

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
        """The dynamics' own loss terms (B, T) (RSSM: `dyn`, `rep`) and scalar metrics by their full logged
        names (the agent adds no prefix; by convention `dyn/...`)."""


class MakeDynamics(Protocol):
    """How the agent builds its dynamics (`make_agent(..., make_dynamics=...)`); must be hashable."""

    def __call__(
        self,
        config,
        obs_space: Mapping[str, Space],
        layout: ActionLayout,
        token_size: int,
        *,
        key: PRNGKeyArray,
    ) -> AbstractDynamics: ...
