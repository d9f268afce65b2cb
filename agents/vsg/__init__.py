"""VSG and SVSG: sparsely gated latent dynamics (Jain et al. 2022) inside the DreamerV3 agent."""

from agents.vsg.agent import GatedLossScales as GatedLossScales
from agents.vsg.agent import GatedRSSMConfig as GatedRSSMConfig
from agents.vsg.agent import GatedStateConfig as GatedStateConfig
from agents.vsg.agent import SVSG_SPEC as SVSG_SPEC
from agents.vsg.agent import SVSGConfig as SVSGConfig
from agents.vsg.agent import VSG_SPEC as VSG_SPEC
from agents.vsg.agent import VSGConfig as VSGConfig
from agents.vsg.agent import make_gated_rssm as make_gated_rssm
from agents.vsg.agent import make_gated_state as make_gated_state
from agents.vsg.dynamics import GatedRSSM as GatedRSSM
from agents.vsg.dynamics import StochasticGatedSSM as StochasticGatedSSM
