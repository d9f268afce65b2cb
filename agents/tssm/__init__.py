"""TSSM (transformer state-space model, after mauicv/world-model-rl) as the latent dynamics of DreamerV3."""

from agents.tssm.agent import TSSMAgentConfig as TSSMAgentConfig
from agents.tssm.agent import TSSMConfig as TSSMConfig
from agents.tssm.agent import TSSMLossScales as TSSMLossScales
from agents.tssm.agent import make_tssm as make_tssm
from agents.tssm.agent import make_tssm_agent as make_tssm_agent
from agents.tssm.dynamics import TSSM as TSSM
from bench.api import AgentSpec

SPEC = AgentSpec(
    name="tssm",
    config_cls=TSSMAgentConfig,
    make=make_tssm_agent,
    batch_shards=True,
    presets=("agents.common:presets.yaml", "agents.tssm:presets.yaml"),
    description="TSSM: DreamerV3 with a causal transformer over (latent, action, reward) tokens instead of "
    "the RSSM (relative positions, KV-cache imagination). Presets size1m..size400m, debug, quick, per suite.",
)
