"""Plan2Explore (Sekar et al., ICML 2020) on our DreamerV3: ensemble disagreement as the intrinsic reward of an
exploration actor-critic, and a task actor-critic on the extrinsic reward of the same world model."""

from agents.p2e.agent import Ensemble as Ensemble
from agents.p2e.agent import P2EState as P2EState
from agents.p2e.agent import Plan2Explore as Plan2Explore
from agents.p2e.agent import disagreement as disagreement
from agents.p2e.agent import make_p2e as make_p2e
from agents.p2e.config import P2EConfig as P2EConfig
from bench.api import AgentSpec

SPEC = AgentSpec(
    name="p2e",
    config_cls=P2EConfig,
    make=make_p2e,
    batch_shards=True,
    presets=("agents.common:presets.yaml", "agents.dreamerv3:sizes.yaml", "agents.dreamerv3:presets.yaml",
             "agents.p2e:presets.yaml"),  # fmt: skip
    description="Plan2Explore on DreamerV3: an ensemble of one-step latent models, their disagreement as the "
    "exploration reward; the exploration actor collects data, the task actor (extrinsic reward, same world "
    "model) is evaluated. Presets size1m..size400m, debug, and DreamerV3's per-suite ones.",
)
