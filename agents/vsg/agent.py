"""VSG and SVSG agents: the DreamerV3 agent (behaviour learning, heads, optimizer, update) with gated dynamics.

Nothing of the DreamerV3 update is repeated here: the agents are `agents.dreamerv3.make_agent` with
`make_dynamics` set to the gated RSSM (VSG) or the gated Gaussian state (SVSG), and configs that extend
`DreamerV3Config` with the dynamics' section and the `gate` loss scale. The loss the agent minimises is

    rec + rew + con + dyn * dyn_kl + rep * rep_kl + gate * gate_kl + policy + value + repval * repval_loss

with `gate` = 0.1 (the VSG paper's gate-KL scale) and the gate prior / free bits in `rssm.gate_prior` /
`rssm.gate_free`. The gate-open rate is logged as `dyn/gate/open_rate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from jaxtyping import PRNGKeyArray

from agents.common.actions import ActionLayout
from agents.dreamerv3 import DreamerV3, DreamerV3Config, LossScales, make_agent
from agents.vsg.dynamics import GatedRSSM, StochasticGatedSSM
from bench.api import AgentSpec
from bench.spaces import Space


@dataclasses.dataclass(frozen=True)
class GatedRSSMConfig:
    """VSG's latent dynamics. Defaults match DreamerV3's size200m RSSM; suite presets set the paper's sizes."""

    deter: int = 8192  # deterministic state size (one update gate per dimension)
    hidden: int = 1024  # width of the cell's input layer and of the prior/posterior layers
    stoch: int = 32  # categorical latent variables ...
    classes: int = 64  # ... of this many classes each
    blocks: int = 8  # block-diagonal recurrent layer; 1 = the paper's dense cell
    img_layers: int = 2  # prior MLP layers on deter (DreamerV3: 2; the VSG code: 1)
    obs_layers: int = 1  # posterior MLP layers on [deter, tokens]
    unimix: float = 0.01
    free_nats: float = 1.0  # dyn and rep are each clipped below at this value
    gate_prior: float = 0.4  # Bernoulli prior of the gate KL (the paper's default)
    gate_free: float = 0.1  # free bits of the gate KL (on its batch mean)
    act: str = "silu"


@dataclasses.dataclass(frozen=True)
class GatedStateConfig:
    """SVSG's latent dynamics: a Gaussian state of `stoch` dimensions and no deterministic path."""

    stoch: int = 8192  # state dimensions (the paper: 1024); the default matches DreamerV3's deter
    hidden: int = 1024
    blocks: int = 8  # block-diagonal recurrent layer; 1 = the paper's dense cell
    min_std: float = 0.1  # std = 2 sigmoid(raw / 2) + min_std
    free_nats: float = 1.0  # the masked dyn and rep KLs are each clipped below at this value
    gate_prior: float = 0.4
    gate_free: float = 0.1
    act: str = "silu"


@dataclasses.dataclass(frozen=True)
class GatedLossScales(LossScales):
    gate: float = 0.1  # the gate KL (the paper's dyn_gate_scale)


@dataclasses.dataclass(frozen=True)
class VSGConfig(DreamerV3Config):
    rssm: GatedRSSMConfig = GatedRSSMConfig()
    loss_scales: GatedLossScales = GatedLossScales()


@dataclasses.dataclass(frozen=True)
class SVSGConfig(DreamerV3Config):
    rssm: GatedStateConfig = GatedStateConfig()
    loss_scales: GatedLossScales = GatedLossScales()


def make_gated_rssm(
    config: VSGConfig,
    obs_space: Mapping[str, Space],
    layout: ActionLayout,
    token_size: int,
    *,
    key: PRNGKeyArray,
) -> GatedRSSM:
    """`make_dynamics` of VSG."""
    del obs_space
    r = config.rssm
    if not isinstance(r, GatedRSSMConfig):
        raise TypeError(f"VSG needs config.rssm to be a GatedRSSMConfig, got {type(r).__name__}")
    return GatedRSSM(
        token_size, layout.size, deter=r.deter, hidden=r.hidden, stoch=r.stoch, classes=r.classes,
        blocks=r.blocks, img_layers=r.img_layers, obs_layers=r.obs_layers, unimix=r.unimix,
        free_nats=r.free_nats, gate_prior=r.gate_prior, gate_free=r.gate_free, act=r.act, key=key,
    )  # fmt: skip


def make_gated_state(
    config: SVSGConfig,
    obs_space: Mapping[str, Space],
    layout: ActionLayout,
    token_size: int,
    *,
    key: PRNGKeyArray,
) -> StochasticGatedSSM:
    """`make_dynamics` of SVSG."""
    del obs_space
    r = config.rssm
    if not isinstance(r, GatedStateConfig):
        raise TypeError(f"SVSG needs config.rssm to be a GatedStateConfig, got {type(r).__name__}")
    return StochasticGatedSSM(
        token_size, layout.size, stoch=r.stoch, hidden=r.hidden, blocks=r.blocks, min_std=r.min_std,
        free_nats=r.free_nats, gate_prior=r.gate_prior, gate_free=r.gate_free, act=r.act, key=key,
    )  # fmt: skip


def make_vsg(config: VSGConfig, obs_space: Mapping[str, Space], act_space: Mapping[str, Space]) -> DreamerV3:
    if not isinstance(config, VSGConfig):
        raise TypeError(f"the vsg agent needs a VSGConfig, got {type(config).__name__}")
    return make_agent(config, obs_space, act_space, make_dynamics=make_gated_rssm)


def make_svsg(config: SVSGConfig, obs_space: Mapping[str, Space], act_space: Mapping[str, Space]) -> DreamerV3:
    if not isinstance(config, SVSGConfig):
        raise TypeError(f"the svsg agent needs an SVSGConfig, got {type(config).__name__}")
    return make_agent(config, obs_space, act_space, make_dynamics=make_gated_state)


VSG_SPEC = AgentSpec(
    name="vsg",
    config_cls=VSGConfig,
    make=make_vsg,
    presets=("agents.common:presets.yaml", "agents.dreamerv3:sizes.yaml", "agents.vsg:presets.yaml"),
    description="VSG (Jain et al. 2022): DreamerV3 with a gated RSSM whose deterministic state is updated only "
    "where sampled Bernoulli gates open (gate prior 0.4, gate KL 0.1). Presets size1m..size400m, debug, per suite.",
    batch_shards=True,
)

SVSG_SPEC = AgentSpec(
    name="svsg",
    config_cls=SVSGConfig,
    make=make_svsg,
    presets=("agents.common:presets.yaml", "agents.dreamerv3:sizes.yaml", "agents.vsg:svsg_presets.yaml"),
    description="SVSG (Jain et al. 2022): DreamerV3 with a fully stochastic Gaussian state, one gate per "
    "dimension shared by prior and posterior, and a gate-masked KL. Presets size1m..size400m, debug, per suite.",
    batch_shards=True,
)
