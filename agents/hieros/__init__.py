"""Hieros (Mattes, Schlosser & Herbrich, ICML 2024): hierarchical imagination on S5 world models.

The resettable S5 layer (`s5.py`, our stand-in for the missing s5-jax package), the S5 world model
(`s5wm.py`), the time-balanced replay sampler (`etbs.py`, registered as the replay sampler "etbs"), one level
of the hierarchy (`hierarchy.py`) and the agent that stacks up to `max_hierarchy` levels (`agent.py`).
"""

from agents.hieros.agent import Hieros as Hieros
from agents.hieros.agent import HierosState as HierosState
from agents.hieros.agent import make_agent as make_agent
from agents.hieros.config import HierosConfig as HierosConfig
from agents.hieros.etbs import time_balanced_age as time_balanced_age
from agents.hieros.etbs import time_balanced_age_cdf as time_balanced_age_cdf
from agents.hieros.s5 import S5 as S5
from agents.hieros.s5 import ssm_parameter_mask as ssm_parameter_mask
from agents.hieros.s5wm import S5Half as S5Half
from agents.hieros.s5wm import S5WorldModel as S5WorldModel
from bench.api import AgentSpec

SPEC = AgentSpec(
    name="hieros",
    config_cls=HierosConfig,
    make=make_agent,
    presets=("agents.hieros:presets.yaml",),
    batch_shards=True,
    description="Hieros (Mattes et al. 2024): up to 3 levels of S5 world models, level i acting every 4^i "
    "steps with subgoals, novelty and extrinsic critics; time-balanced replay. Presets size1m..size200m, "
    "debug, quick, and atari100k (the paper's setting). --max_hierarchy 1 is a flat S5WM agent.",
)
