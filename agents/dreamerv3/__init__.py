"""DreamerV3 (2024 version) in Equinox: the flat world-model baseline and the base of THICK and VSG/SVSG."""

from agents.dreamerv3.agent import DreamerV3 as DreamerV3
from agents.dreamerv3.agent import DreamerV3State as DreamerV3State
from agents.dreamerv3.agent import Networks as Networks
from agents.dreamerv3.agent import make_agent as make_agent
from agents.dreamerv3.behaviour import AbstractBehaviourExtension as AbstractBehaviourExtension
from agents.dreamerv3.behaviour import NoExtension as NoExtension
from agents.dreamerv3.config import DreamerV3Config as DreamerV3Config
from agents.dreamerv3.config import LossScales as LossScales
from agents.dreamerv3.dynamics import AbstractDynamics as AbstractDynamics
from agents.dreamerv3.dynamics import Latent as Latent
from agents.dreamerv3.dynamics import WorldModelData as WorldModelData
from agents.dreamerv3.rssm import RSSM as RSSM
from agents.dreamerv3.rssm import make_rssm as make_rssm
from bench.api import AgentSpec

SPEC = AgentSpec(
    name="dreamerv3",
    config_cls=DreamerV3Config,
    make=make_agent,
    presets=("agents.common:presets.yaml", "agents.dreamerv3:sizes.yaml", "agents.dreamerv3:presets.yaml"),
    description="DreamerV3 (Hafner et al. 2024 version): RSSM world model with block GRU, imagination "
    "actor-critic, LaProp + AGC. Presets size1m..size400m, debug, and one per suite.",
    batch_shards=True,
)
