"""The `tssm` agent: DreamerV3 (heads, actor-critic, optimizer, update) with TSSM latent dynamics.

Nothing of the DreamerV3 update is repeated here: the agent is `agents.dreamerv3.make_agent` with
`make_dynamics` set to the TSSM (dynamics.py), and a config that replaces the `rssm` section by the TSSM's
(same names where the meaning is shared: stoch, classes, hidden, unimix, free_nats, img_layers, obs_layers)
and adds the `tokrew` loss scale of the reward token's head. The loss is

    rec + rew + con + dyn * dyn_kl + rep * rep_kl + tokrew * reward_token_nll + policy + value + repval

"RNN vs transformer dynamics" is therefore one agent name apart, everything else equal.
Reference: /work/shared/reference/transformer_wm.md (TSSM section).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from jaxtyping import PRNGKeyArray

from agents.common.actions import ActionLayout
from agents.dreamerv3 import DreamerV3, DreamerV3Config, LossScales, make_agent
from agents.tssm.dynamics import TSSM
from bench.config import ranged
from bench.spaces import Space


@dataclasses.dataclass(frozen=True)
class TSSMConfig:
    """TSSM sizes. Defaults pair with DreamerV3's size200m networks (presets.yaml has the size table)."""

    embed: int = ranged(1024, ge=1)  # token width = the deterministic state h_t
    layers: int = ranged(8, ge=1)  # transformer blocks
    heads: int = ranged(16, ge=1)  # attention heads (embed must divide)
    context: int = ranged(16, ge=1)  # steps in the attention window (3 tokens each)
    hidden: int = ranged(1024, ge=1)  # width of the posterior, prior and reward-token MLPs
    stoch: int = ranged(32, ge=1)  # categorical latent variables ...
    classes: int = ranged(64, ge=1)  # ... of this many classes each
    img_layers: int = 2  # prior MLP layers on the action token's output
    obs_layers: int = 1  # posterior MLP layers on the encoder tokens
    reward_layers: int = 1  # MLP layers of the reward token's head
    unimix: float = ranged(0.01, ge=0, le=1)
    free_nats: float = ranged(1.0, ge=0)  # dyn and rep KL are each clipped below at this value
    act: str = "silu"
    # `gaussian`: continuous latents of `stoch` dimensions (classes unused), std = softplus(raw) + min_std, as
    # DreamerV3's `rssm.latent` option (the seed project's continuous-vs-discrete comparison inside TSSM).
    latent: str = "categorical"
    min_std: float = ranged(0.1, gt=0)


@dataclasses.dataclass(frozen=True)
class TSSMLossScales(LossScales):
    tokrew: float = 1.0  # the reward token's head (it supplies the reward tokens in imagination)


@dataclasses.dataclass(frozen=True)
class TSSMAgentConfig(DreamerV3Config):
    # Whole sequences are trained from an empty window: the window is not stored in replay.
    replay_context: int = ranged(0, ge=0, le=0)
    rssm: TSSMConfig = TSSMConfig()
    loss_scales: TSSMLossScales = TSSMLossScales()


def make_tssm(
    config: TSSMAgentConfig,
    obs_space: Mapping[str, Space],
    layout: ActionLayout,
    token_size: int,
    *,
    key: PRNGKeyArray,
) -> TSSM:
    """`make_dynamics` of the tssm agent."""
    del obs_space
    r = config.rssm
    if not isinstance(r, TSSMConfig):
        raise TypeError(f"tssm needs config.rssm to be a TSSMConfig, got {type(r).__name__}")
    return TSSM(
        token_size, layout.size, embed=r.embed, layers=r.layers, heads=r.heads, context=r.context,
        hidden=r.hidden, stoch=r.stoch, classes=r.classes, img_layers=r.img_layers, obs_layers=r.obs_layers,
        reward_layers=r.reward_layers, unimix=r.unimix, free_nats=r.free_nats, act=r.act, latent=r.latent,
        min_std=r.min_std, key=key,
    )  # fmt: skip


def make_tssm_agent(config: TSSMAgentConfig, obs_space: Mapping[str, Space],
                    act_space: Mapping[str, Space]) -> DreamerV3:  # fmt: skip
    if not isinstance(config, TSSMAgentConfig):
        raise TypeError(f"the tssm agent needs a TSSMAgentConfig, got {type(config).__name__}")
    if config.replay_context:
        raise ValueError("tssm trains whole sequences from an empty window: replay_context must be 0")
    return make_agent(config, obs_space, act_space, make_dynamics=make_tssm)
