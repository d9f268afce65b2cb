"""Hieros (Mattes, Schlosser & Herbrich, ICML 2024): hierarchical imagination on S5 world models.

So far the foundation: the resettable S5 layer (`s5.py`, our stand-in for the missing s5-jax package), the
S5 world model (`s5wm.py`) and the time-balanced replay sampler (`etbs.py`). The agent and the hierarchy are
not built yet.
"""

from agents.hieros.etbs import time_balanced_age as time_balanced_age
from agents.hieros.etbs import time_balanced_age_cdf as time_balanced_age_cdf
from agents.hieros.s5 import S5 as S5
from agents.hieros.s5 import ssm_parameter_mask as ssm_parameter_mask
from agents.hieros.s5wm import S5Half as S5Half
from agents.hieros.s5wm import S5WorldModel as S5WorldModel
