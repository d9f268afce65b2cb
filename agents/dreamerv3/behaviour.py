"""The behaviour extension point of the DreamerV3 agent: what a variant adds to imagination training.

DreamerV3's actor and critic learn from imagined trajectories (agents/common/behaviour.py). A variant that
changes the critic's regression targets or trains extra networks on the imagined states (THICK's coarse
critic and long-horizon targets) implements `AbstractBehaviourExtension`; plain DreamerV3 uses
`NoExtension`. The extension is a module of networks: the agent trains its arrays with its other networks
(one optimizer) and keeps one slow EMA copy of them (`DreamerV3State.slow["behaviour"]`, rate
`critic.slow_rate`), which the optimizer never sees.

`make_behaviour(config, dynamics, *, key) -> AbstractBehaviourExtension` builds it from the agent config and
the (freshly built) dynamics, e.g. for feature sizes. It must be hashable (a module-level function).
"""

from __future__ import annotations

import abc

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray

from agents.dreamerv3.dynamics import AbstractDynamics, Latent


class AbstractBehaviourExtension(eqx.Module):
    """Hooks into DreamerV3's behaviour learning. Implementations are final classes."""

    @abc.abstractmethod
    def critic_targets(
        self,
        slow: AbstractBehaviourExtension,
        dynamics: AbstractDynamics,
        trajectory: Latent,
        returns: Float[Array, "N H"],
        cont: Float[Array, "N H+1"],
        *,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "N H"], dict[str, Float[Array, "N H"]], dict[str, Array]]:
        """The critic's regression targets in imagination, extra loss terms and metrics.

        `slow` is this extension's slow EMA copy, `trajectory` the imagined latents (N, H+1, ...) from the
        N = B*T posterior states, `returns` the lambda returns of the online critic for the first H steps,
        `cont` the predicted continue probabilities (discount folded in). Returns (critic targets (N, H),
        extra loss terms (N, H) that the agent averages over H into (B, T) terms and weights by the loss
        scales of the same names, scalar metrics logged under `ac/`).
        """


class NoExtension(AbstractBehaviourExtension):
    """Plain DreamerV3: the critic regresses the lambda returns; no extra networks or terms."""

    def critic_targets(self, slow, dynamics, trajectory, returns, cont, *, key):
        del slow, dynamics, trajectory, cont, key
        return returns, {}, {}


def make_no_extension(config, dynamics: AbstractDynamics, *, key: PRNGKeyArray) -> NoExtension:
    """The default `make_behaviour`."""
    del config, dynamics, key
    return NoExtension()
