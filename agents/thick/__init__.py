"""THICK (Gumbsch et al., ICLR 2024): context RSSM with sparse GateL0RD contexts, a high-level world model
over context changes, and THICK Dreamer's long-horizon critic targets, on our DreamerV3."""

from agents.thick.agent import ThickBehaviour as ThickBehaviour
from agents.thick.agent import ThickWorldModel as ThickWorldModel
from agents.thick.agent import make_thick as make_thick
from agents.thick.config import ThickConfig as ThickConfig
from agents.thick.config import ThickLossScales as ThickLossScales
from agents.thick.crssm import ContextRSSM as ContextRSSM
from agents.thick.highlevel import HighLevelModel as HighLevelModel
from bench.api import AgentSpec

SPEC = AgentSpec(
    name="thick",
    config_cls=ThickConfig,
    make=make_thick,
    batch_shards=True,
    presets=("agents.common:presets.yaml", "agents.dreamerv3:sizes.yaml", "agents.thick:presets.yaml"),
    description="THICK Dreamer: DreamerV3 with a context RSSM (GateL0RD contexts that change sparsely), a "
    "high-level model over context changes, and long-horizon values mixed into the critic targets. Presets "
    "size1m..size400m, debug, and one per suite (loss_scales.sparse).",
)
